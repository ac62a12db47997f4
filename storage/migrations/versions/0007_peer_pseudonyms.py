"""A destination's pseudonym space: ``peer.pseudonyms`` (``shared`` or ``own``).

``own``: patient IDs, names, dates and every instance UID are re-keyed for
that destination when sent (gateway.forwarder), consistent within it and
unlinkable across destinations. Existing peers get ``shared``.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``peer.pseudonyms``."""
    with op.batch_alter_table("peer") as batch:
        batch.add_column(sa.Column("pseudonyms", sa.String(16), nullable=False,
                                   server_default="shared"))


def downgrade() -> None:
    """Drop ``peer.pseudonyms``."""
    with op.batch_alter_table("peer") as batch:
        batch.drop_column("pseudonyms")
