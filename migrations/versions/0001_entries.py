"""List entries, the list version counter and the meta table.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "entries",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("list", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("value", sa.String(512), nullable=False),
        sa.Column("reason", sa.String(255), nullable=False, server_default=""),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False, server_default=""),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("hit_count", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("last_hit_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_entries"),
        sa.UniqueConstraint("list", "kind", "value", name="uq_entries_list_kind_value"),
        sa.CheckConstraint("list IN ('white', 'black')", name="list"),
        sa.CheckConstraint("kind IN ('ip', 'cidr', 'hostname', 'domain', 'regex', 'rule')", name="kind"),
        sa.CheckConstraint("source IN ('manual', 'imported', 'builtin', 'learned')", name="source"),
    )
    op.create_index("ix_entries_list_kind", "entries", ["list", "kind"])
    op.create_table(
        "list_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_list_version"),
    )
    op.create_table(
        "meta",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_meta"),
    )
    op.execute(sa.text("INSERT INTO list_version (id, version, changed_at) VALUES (1, 0, CURRENT_TIMESTAMP)"))


def downgrade() -> None:
    op.drop_table("meta")
    op.drop_table("list_version")
    op.drop_index("ix_entries_list_kind", table_name="entries")
    op.drop_table("entries")
