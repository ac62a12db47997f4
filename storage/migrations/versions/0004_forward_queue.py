"""The forward queue: ``forward_job`` and ``forward_item`` (see storage.queue_models).

- ``forward_job``: one delivery of a study to one destination peer, its
  state, lease, attempts and back-off; a partial unique index keeps at most
  one open (pending or sending) job per (study, destination).
- ``forward_item``: one row per instance of a job with the destination's
  DICOM status; removed with its job.

Written by hand to match :mod:`storage.queue_models`;
``tests/integration/test_storage_schema.py`` compares the two.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OPEN = "state IN ('pending', 'sending')"


def _at() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the queue's two tables and their indexes."""
    op.create_table(
        "forward_job",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("destination", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("route", sa.String(64), nullable=True),
        sa.Column("priority", sa.Integer(), server_default="0", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("next_attempt_at", _at(), nullable=False),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_expires_at", _at(), nullable=True),
        sa.Column("last_error", sa.Text(), server_default="", nullable=False),
        sa.Column("confirmed_by", sa.String(64), server_default="", nullable=False),
        sa.Column("created_at", _at(), nullable=False),
        sa.Column("updated_at", _at(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_forward_job"),
    )
    op.create_index("ix_forward_job_due", "forward_job", ["state", "next_attempt_at"])
    op.create_index("ix_forward_job_study_instance_uid", "forward_job", ["study_instance_uid"])
    op.create_index("ix_forward_job_open", "forward_job", ["study_instance_uid", "destination"],
                    unique=True, sqlite_where=sa.text(_OPEN), postgresql_where=sa.text(_OPEN))
    op.create_table(
        "forward_item",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_fk", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["job_fk"], ["forward_job.id"],
                                name="fk_forward_item_job_fk_forward_job", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_forward_item"),
        sa.UniqueConstraint("job_fk", "sop_instance_uid",
                            name="uq_forward_item_job_fk_sop_instance_uid"),
    )
    op.create_index("ix_forward_item_job_fk", "forward_item", ["job_fk"])


def downgrade() -> None:
    """Drop what :func:`upgrade` created."""
    op.drop_index("ix_forward_item_job_fk", table_name="forward_item")
    op.drop_table("forward_item")
    op.drop_index("ix_forward_job_open", table_name="forward_job")
    op.drop_index("ix_forward_job_study_instance_uid", table_name="forward_job")
    op.drop_index("ix_forward_job_due", table_name="forward_job")
    op.drop_table("forward_job")
