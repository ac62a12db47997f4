"""Each node's spool backlog: ``node_spool`` (storage.nodes).

One row per node (host name and spool folder), with the acceptance time of
the oldest entry waiting in its spool and when it last said so; the
stability sweep of every node waits for the oldest (ARCHITECTURE.md,
scale-out). Written by hand to match :mod:`storage.nodes`;
``tests/integration/test_storage_schema.py`` compares the two.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create ``node_spool``."""
    op.create_table(
        "node_spool",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("node", sa.String(128), nullable=False),
        sa.Column("oldest_waiting_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_node_spool"),
        sa.UniqueConstraint("node", name="uq_node_spool_node"),
    )


def downgrade() -> None:
    """Drop what :func:`upgrade` created."""
    op.drop_table("node_spool")
