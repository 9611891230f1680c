"""Indexes for the operator's page: a list or the learned addresses newest first, and learned
per day.

Revision ID: 0008
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Pages newest first: the last rows of one list, or of one source (learned), by id.
    op.create_index("ix_entries_list_id", "entries", ["list", "id"])
    op.create_index("ix_entries_source_id", "entries", ["source", "id"])
    # The audit log of one action newest first; addresses learned per day (a time range).
    op.create_index("ix_audit_action_id", "audit", ["action", "id"])
    op.create_index("ix_audit_action_at", "audit", ["action", "at"])


def downgrade() -> None:
    op.drop_index("ix_audit_action_at", table_name="audit")
    op.drop_index("ix_audit_action_id", table_name="audit")
    op.drop_index("ix_entries_source_id", table_name="entries")
    op.drop_index("ix_entries_list_id", table_name="entries")
