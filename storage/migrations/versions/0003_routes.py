"""Routes: routing rules and the destination peers each one sends to.

- ``route``: a unique name, an enabled flag, a priority (routes are
  evaluated in ascending priority, then by name), the conditions as a JSON
  array of ``KEYWORD=PATTERN`` strings, created/updated times.
- ``route_destination``: one row per (route, peer) with its position; the
  route's rows go with it (``ON DELETE CASCADE``), a peer named by a route
  cannot be removed while it is (no cascade), and ``peer_fk`` is indexed for
  that check.

Written by hand to match :mod:`storage.models`;
``tests/integration/test_storage_schema.py`` compares the two.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-11
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _at() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create ``route`` and ``route_destination``."""
    op.create_table(
        "route",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("conditions", sa.Text(), nullable=False),
        sa.Column("created_at", _at(), nullable=False),
        sa.Column("updated_at", _at(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_route"),
        sa.UniqueConstraint("name", name="uq_route_name"),
    )
    op.create_table(
        "route_destination",
        sa.Column("route_fk", sa.Integer(), nullable=False),
        sa.Column("peer_fk", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["route_fk"], ["route.id"], name="fk_route_destination_route_fk_route",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["peer_fk"], ["peer.id"], name="fk_route_destination_peer_fk_peer"
        ),
        sa.PrimaryKeyConstraint("route_fk", "peer_fk", name="pk_route_destination"),
    )
    op.create_index("ix_route_destination_peer_fk", "route_destination", ["peer_fk"])


def downgrade() -> None:
    """Drop what :func:`upgrade` created, dependants first."""
    op.drop_index("ix_route_destination_peer_fk", table_name="route_destination")
    op.drop_table("route_destination")
    op.drop_table("route")
