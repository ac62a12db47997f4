"""Destination schedules: ``peer.schedule`` (``immediate`` or a cron window, storage.schedule).

Existing peers get ``immediate``: nothing they were sent changes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``peer.schedule``."""
    with op.batch_alter_table("peer") as batch:
        batch.add_column(sa.Column("schedule", sa.Text(), nullable=False,
                                   server_default="immediate"))


def downgrade() -> None:
    """Drop ``peer.schedule``."""
    with op.batch_alter_table("peer") as batch:
        batch.drop_column("schedule")
