"""C-FIND: peer scopes, folded person names and the indexes queries use.

- ``peer.scope`` (``all``, ``sent``, ``routed``): which studies a query or
  retrieve peer sees; existing peers get ``sent``, the default.
- ``patient.patient_name_folded`` and ``study.referring_physician_name_folded``:
  the person names in lower case, so that PN matching is case-insensitive
  on both databases alike (PS3.4 C.2.2.2, a documented choice); existing
  rows are filled here with Python's ``str.lower``, which is what
  ``storage.matching.fold`` does at this revision.
- Indexes: the folded patient name (``text_pattern_ops`` on PostgreSQL, so a
  ``LIKE 'prefix%'`` uses it), ``study.source_peer`` (scope ``sent``) and
  ``series (modality, study_fk)`` (Modality and ModalitiesInStudy keys).
  PatientID (unique), StudyDate and AccessionNumber were indexed by 0001.

Written by hand to match :mod:`storage.models`;
``tests/integration/test_storage_schema.py`` compares the two.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 500


def _fold(table: str, column: str) -> None:
    """Fill ``<column>_folded`` from ``column`` for the rows already there."""
    bind = op.get_bind()
    source = sa.table(table, sa.column("id", sa.Integer()), sa.column(column, sa.Text()),
                      sa.column(f"{column}_folded", sa.Text()))
    last = 0
    while True:
        rows = bind.execute(
            sa.select(source.c.id, source.c[column]).where(source.c.id > last)
            .order_by(source.c.id).limit(_BATCH)
        ).all()
        if not rows:
            return
        bind.execute(
            sa.update(source).where(source.c.id == sa.bindparam("row_id"))
            .values({f"{column}_folded": sa.bindparam("folded")}),
            [{"row_id": row[0], "folded": (row[1] or "").lower()} for row in rows],
        )
        last = rows[-1][0]


def upgrade() -> None:
    """Add the scope, the folded names and the query indexes."""
    with op.batch_alter_table("peer") as batch:
        batch.add_column(sa.Column("scope", sa.String(16), nullable=False,
                                   server_default="sent"))
    with op.batch_alter_table("patient") as batch:
        batch.add_column(sa.Column("patient_name_folded", sa.Text(), nullable=False,
                                   server_default=""))
    with op.batch_alter_table("study") as batch:
        batch.add_column(sa.Column("referring_physician_name_folded", sa.Text(),
                                   nullable=False, server_default=""))
    _fold("patient", "patient_name")
    _fold("study", "referring_physician_name")
    op.create_index("ix_patient_patient_name_folded", "patient", ["patient_name_folded"],
                    postgresql_ops={"patient_name_folded": "text_pattern_ops"})
    op.create_index("ix_study_source_peer", "study", ["source_peer"])
    op.create_index("ix_series_modality", "series", ["modality", "study_fk"])


def downgrade() -> None:
    """Drop what :func:`upgrade` added."""
    op.drop_index("ix_series_modality", table_name="series")
    op.drop_index("ix_study_source_peer", table_name="study")
    op.drop_index("ix_patient_patient_name_folded", table_name="patient")
    with op.batch_alter_table("study") as batch:
        batch.drop_column("referring_physician_name_folded")
    with op.batch_alter_table("patient") as batch:
        batch.drop_column("patient_name_folded")
    with op.batch_alter_table("peer") as batch:
        batch.drop_column("scope")
