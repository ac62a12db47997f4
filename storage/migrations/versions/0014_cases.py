"""Consultation cases: ``consult_case``, ``case_uid``, ``case_result`` (storage.case_models).

- ``consult_case``: one per (study, institute), opened when the study is
  queued to the institute; sending clinic, pseudonym space, return peer,
  state;
- ``case_uid``: the UID map the institute saw (the node's UID and the
  institute's), removed with its case;
- ``case_result``: re-identified results returning to the clinic.

Written by hand to match :mod:`storage.case_models`;
``tests/integration/test_storage_schema.py`` compares the two.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _at() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the three tables and their indexes."""
    op.create_table(
        "consult_case",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("institute", sa.String(64), nullable=False),
        sa.Column("clinic", sa.String(64), nullable=True),
        sa.Column("return_to", sa.String(64), nullable=True),
        sa.Column("pseudonyms", sa.String(16), nullable=False),
        sa.Column("institute_patient_id", sa.String(64), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", _at(), nullable=False),
        sa.Column("updated_at", _at(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_consult_case"),
        sa.UniqueConstraint("study_instance_uid", "institute",
                            name="uq_consult_case_study_instance_uid_institute"),
    )
    op.create_index("ix_consult_case_institute", "consult_case", ["institute"])
    op.create_table(
        "case_uid",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_fk", sa.Integer(), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("uid", sa.String(64), nullable=False),
        sa.Column("institute_uid", sa.String(64), nullable=True),
        sa.ForeignKeyConstraint(["case_fk"], ["consult_case.id"],
                                name="fk_case_uid_case_fk_consult_case", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_case_uid"),
        sa.UniqueConstraint("case_fk", "uid", name="uq_case_uid_case_fk_uid"),
    )
    op.create_index("ix_case_uid_institute_uid", "case_uid", ["institute_uid"])
    op.create_table(
        "case_result",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("case_fk", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("sop_class_uid", sa.String(64), nullable=False),
        sa.Column("transfer_syntax_uid", sa.String(64), nullable=False),
        sa.Column("institute_sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("file_path", sa.String(255), nullable=False),
        sa.Column("received_at", _at(), nullable=False),
        sa.ForeignKeyConstraint(["case_fk"], ["consult_case.id"],
                                name="fk_case_result_case_fk_consult_case", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_case_result"),
        sa.UniqueConstraint("sop_instance_uid", name="uq_case_result_sop_instance_uid"),
    )
    op.create_index("ix_case_result_case_fk", "case_result", ["case_fk"])


def downgrade() -> None:
    """Drop what :func:`upgrade` created."""
    op.drop_index("ix_case_result_case_fk", table_name="case_result")
    op.drop_table("case_result")
    op.drop_index("ix_case_uid_institute_uid", table_name="case_uid")
    op.drop_table("case_uid")
    op.drop_index("ix_consult_case_institute", table_name="consult_case")
    op.drop_table("consult_case")
