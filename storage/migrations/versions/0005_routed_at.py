"""When the routes were last applied to a study: ``study.routed_at``.

The stability sweep (:func:`storage.jobs.unrouted_stable`) routes a study
once no instance has arrived for ``forward.stable_after_seconds``, and again
(a follow-up) when instances arrived after it was routed. Existing studies
get NULL: routed at the next sweep, which queues only what their
destinations have not yet received.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``study.routed_at``."""
    with op.batch_alter_table("study") as batch:
        batch.add_column(sa.Column("routed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Drop ``study.routed_at``."""
    with op.batch_alter_table("study") as batch:
        batch.drop_column("routed_at")
