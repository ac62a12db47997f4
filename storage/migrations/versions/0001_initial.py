"""The first schema: index, pseudonym map, peers, audit and quarantine.

Written by hand to match :mod:`storage.models` exactly (names follow
``storage.models.NAMING_CONVENTION``); ``tests/integration/test_storage_schema.py``
compares the migrated database with the models on SQLite and PostgreSQL.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UID = sa.String(64)
_AE = sa.String(16)
_SHORT = sa.String(64)
_ENUM = sa.String(16)


def _at() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create every table of the first version."""
    op.create_table(
        "patient",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", _SHORT, nullable=False),
        sa.Column("patient_name", sa.Text(), nullable=False),
        sa.Column("patient_sex", _SHORT, nullable=False),
        sa.Column("patient_birth_date", _SHORT, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_patient"),
        sa.UniqueConstraint("patient_id", name="uq_patient_patient_id"),
    )
    op.create_table(
        "study",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_fk", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", _UID, nullable=False),
        sa.Column("study_date", _SHORT, nullable=False),
        sa.Column("study_time", _SHORT, nullable=False),
        sa.Column("accession_number", _SHORT, nullable=False),
        sa.Column("study_id", _SHORT, nullable=False),
        sa.Column("study_description", sa.Text(), nullable=False),
        sa.Column("referring_physician_name", sa.Text(), nullable=False),
        sa.Column("modalities_in_study", sa.Text(), nullable=False),
        sa.Column("sop_classes_in_study", sa.Text(), nullable=False),
        sa.Column("number_of_study_related_series", sa.Integer(), nullable=False),
        sa.Column("number_of_study_related_instances", sa.Integer(), nullable=False),
        sa.Column("source_peer", _SHORT, nullable=True),
        sa.Column("calling_ae_title", _AE, nullable=False),
        sa.Column("first_received_at", _at(), nullable=False),
        sa.Column("last_received_at", _at(), nullable=False),
        sa.Column("state", _ENUM, nullable=False),
        sa.ForeignKeyConstraint(["patient_fk"], ["patient.id"], name="fk_study_patient_fk_patient"),
        sa.PrimaryKeyConstraint("id", name="pk_study"),
        sa.UniqueConstraint("study_instance_uid", name="uq_study_study_instance_uid"),
    )
    op.create_index("ix_study_study_date", "study", ["study_date"])
    op.create_index("ix_study_accession_number", "study", ["accession_number"])
    op.create_index("ix_study_patient_fk", "study", ["patient_fk"])
    op.create_index("ix_study_last_received_at", "study", ["last_received_at"])
    op.create_table(
        "series",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_fk", sa.Integer(), nullable=False),
        sa.Column("series_instance_uid", _UID, nullable=False),
        sa.Column("modality", _SHORT, nullable=False),
        sa.Column("series_number", sa.Integer(), nullable=True),
        sa.Column("series_description", sa.Text(), nullable=False),
        sa.Column("body_part_examined", _SHORT, nullable=False),
        sa.Column("number_of_series_related_instances", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["study_fk"], ["study.id"], name="fk_series_study_fk_study", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_series"),
        sa.UniqueConstraint("series_instance_uid", name="uq_series_series_instance_uid"),
    )
    op.create_index("ix_series_study_fk", "series", ["study_fk"])
    op.create_table(
        "instance",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("series_fk", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", _UID, nullable=False),
        sa.Column("sop_class_uid", _UID, nullable=False),
        sa.Column("instance_number", sa.Integer(), nullable=True),
        sa.Column("transfer_syntax_uid", _UID, nullable=False),
        sa.Column("file_path", sa.String(255), nullable=False),
        sa.Column("file_size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("received_sha256", sa.String(64), nullable=False),
        sa.Column("received_at", _at(), nullable=False),
        sa.Column("calling_ae_title", _AE, nullable=False),
        sa.Column("source_peer", _SHORT, nullable=True),
        sa.ForeignKeyConstraint(
            ["series_fk"], ["series.id"], name="fk_instance_series_fk_series", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_instance"),
        sa.UniqueConstraint("sop_instance_uid", name="uq_instance_sop_instance_uid"),
    )
    op.create_index("ix_instance_series_fk", "instance", ["series_fk"])
    op.create_table(
        "peer",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", _SHORT, nullable=False),
        sa.Column("ae_title", _AE, nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("roles", _SHORT, nullable=False),
        sa.Column("pinned_address", sa.String(64), nullable=True),
        sa.Column("created_at", _at(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_peer"),
        sa.UniqueConstraint("slug", name="uq_peer_slug"),
    )
    op.create_index("ix_peer_ae_title", "peer", ["ae_title"])
    op.create_table(
        "pseudonym_map",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", _ENUM, nullable=False),
        sa.Column("pseudonym", _SHORT, nullable=False),
        sa.Column("original_ciphertext", sa.LargeBinary(), nullable=False),
        sa.Column("study_instance_uid", _UID, nullable=True),
        sa.Column("created_at", _at(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_pseudonym_map"),
        sa.UniqueConstraint("kind", "pseudonym", name="uq_pseudonym_map_kind_pseudonym"),
    )
    op.create_index("ix_pseudonym_map_pseudonym", "pseudonym_map", ["pseudonym"])
    op.create_index(
        "ix_pseudonym_map_study_instance_uid", "pseudonym_map", ["study_instance_uid"]
    )
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", _at(), nullable=False),
        sa.Column("event", _SHORT, nullable=False),
        sa.Column("actor", _SHORT, nullable=False),
        sa.Column("outcome", _ENUM, nullable=False),
        sa.Column("study_instance_uid", _UID, nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit"),
    )
    op.create_index("ix_audit_at", "audit", ["at"])
    op.create_index("ix_audit_event", "audit", ["event"])
    op.create_index("ix_audit_study_instance_uid", "audit", ["study_instance_uid"])
    op.create_table(
        "quarantine",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("spool_name", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", _at(), nullable=False),
        sa.Column("calling_ae_title", _AE, nullable=False),
        sa.Column("sop_instance_uid", _UID, nullable=True),
        sa.Column("released_at", _at(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_quarantine"),
        sa.UniqueConstraint("spool_name", name="uq_quarantine_spool_name"),
    )


def downgrade() -> None:
    """Drop every table, dependants first."""
    for table in ("quarantine", "audit", "pseudonym_map", "peer", "instance", "series", "study",
                  "patient"):
        op.drop_table(table)
