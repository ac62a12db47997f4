"""A destination's forwarding options on ``peer``: associations, retry policy, transfer syntax.

``max_associations`` (existing peers: 1, what the forwarder did so far);
``max_attempts``, ``first_delay_seconds``, ``backoff_multiplier`` and
``max_delay_seconds`` (NULL: the ``[forward]`` defaults, so nothing changes
for existing peers); ``transfer_syntax`` (``stored``: what was sent so far).

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_POLICY = ("max_attempts", "first_delay_seconds", "backoff_multiplier", "max_delay_seconds")


def upgrade() -> None:
    """Add the destination options to ``peer``."""
    with op.batch_alter_table("peer") as batch:
        batch.add_column(sa.Column("max_associations", sa.Integer(), nullable=False,
                                   server_default="1"))
        for name in _POLICY:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=True))
        batch.add_column(sa.Column("transfer_syntax", sa.String(16), nullable=False,
                                   server_default="stored"))


def downgrade() -> None:
    """Drop the destination options."""
    with op.batch_alter_table("peer") as batch:
        for name in ("transfer_syntax", *reversed(_POLICY), "max_associations"):
            batch.drop_column(name)
