"""A peer's DICOM TLS: ``peer.tls`` (connect to it over TLS) and ``peer.certificate_sha256``.

``tls``: associations the node opens to this peer (forwarding, C-MOVE
sub-operations, ``peer echo``) use TLS (PS3.15 B.9). ``certificate_sha256``:
the SHA-256 fingerprint of the client certificate this peer must present;
an association claiming its AE title without that certificate is refused
(RELIABILITY.md T02). Existing peers get neither.

Revision ID: 0012
Revises: 0008
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``peer.tls`` and ``peer.certificate_sha256``."""
    with op.batch_alter_table("peer") as batch:
        batch.add_column(sa.Column("tls", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
        batch.add_column(sa.Column("certificate_sha256", sa.String(64), nullable=True))


def downgrade() -> None:
    """Drop both columns."""
    with op.batch_alter_table("peer") as batch:
        batch.drop_column("certificate_sha256")
        batch.drop_column("tls")
