"""Storage Commitment results: ``storage_commitment`` (see storage.commitment_models).

One row per N-ACTION the forwarder sends (PS3.4 J.3), keyed by its
Transaction UID: the job and destination, when it was asked and answered,
the referenced instances and the N-EVENT-REPORT's result. Removed with its
job.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _at() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create ``storage_commitment`` and its indexes."""
    op.create_table(
        "storage_commitment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("transaction_uid", sa.String(64), nullable=False),
        sa.Column("job_fk", sa.Integer(), nullable=False),
        sa.Column("destination", sa.String(64), nullable=False),
        sa.Column("requested_at", _at(), nullable=False),
        sa.Column("requested_uids", sa.Text(), nullable=False),
        sa.Column("requested", sa.Integer(), nullable=False),
        sa.Column("answered_at", _at(), nullable=True),
        sa.Column("reported_by", sa.String(64), nullable=True),
        sa.Column("event_type", sa.Integer(), nullable=True),
        sa.Column("committed", sa.Integer(), nullable=True),
        sa.Column("failed", sa.Integer(), nullable=True),
        sa.Column("failures", sa.Text(), server_default="{}", nullable=False),
        sa.ForeignKeyConstraint(["job_fk"], ["forward_job.id"],
                                name="fk_storage_commitment_job_fk_forward_job",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_storage_commitment"),
        sa.UniqueConstraint("transaction_uid", name="uq_storage_commitment_transaction_uid"),
    )
    op.create_index("ix_storage_commitment_job_fk", "storage_commitment", ["job_fk"])


def downgrade() -> None:
    """Drop what :func:`upgrade` created."""
    op.drop_index("ix_storage_commitment_job_fk", table_name="storage_commitment")
    op.drop_table("storage_commitment")
