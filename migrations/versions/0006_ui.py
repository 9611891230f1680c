"""Indexes for the operator's page: a list or the learned addresses newest first, learned per
day, and (on PostgreSQL) text search that needs no scan of the whole table.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")

# Searched with ILIKE '%text%' on PostgreSQL: trigram indexes answer that without reading every
# row (100,000s of entries: from most of a second to milliseconds). SQLite scans, fast enough.
TRIGRAM_INDEXES = {
    "ix_entries_value_trgm": ("entries", "value"),
    "ix_entries_reason_trgm": ("entries", "reason"),
    "ix_audit_actor_trgm": ("audit", "actor"),
    "ix_audit_target_trgm": ("audit", "target"),
    "ix_audit_detail_trgm": ("audit", "detail"),
}


def upgrade() -> None:
    # Pages newest first: the last rows of one list, or of one source (learned), by id.
    op.create_index("ix_entries_list_id", "entries", ["list", "id"])
    op.create_index("ix_entries_source_id", "entries", ["source", "id"])
    # The audit log of one action newest first; addresses learned per day (a time range).
    op.create_index("ix_audit_action_id", "audit", ["action", "id"])
    op.create_index("ix_audit_action_at", "audit", ["action", "at"])
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        _trigram_indexes(bind)


def _trigram_indexes(bind: sa.Connection) -> None:
    """pg_trgm is a trusted extension (PostgreSQL 13+: the database's owner may create it) and
    ships with the server on Debian and most services. Where it cannot be had, searches still
    work, by reading the table: the migration says so and goes on."""
    try:
        with bind.begin_nested():
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
            for name, (table, column) in TRIGRAM_INDEXES.items():
                bind.execute(sa.text(f"CREATE INDEX {name} ON {table} USING gin ({column} gin_trgm_ops)"))
    except sa.exc.DBAPIError as exc:
        log.warning("pg_trgm is not available (%s): text searches will read whole tables", exc.orig)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in TRIGRAM_INDEXES:
            op.execute(sa.text(f"DROP INDEX IF EXISTS {name}"))
    op.drop_index("ix_audit_action_at", table_name="audit")
    op.drop_index("ix_audit_action_id", table_name="audit")
    op.drop_index("ix_entries_source_id", table_name="entries")
    op.drop_index("ix_entries_list_id", table_name="entries")
