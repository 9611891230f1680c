"""Reports of temporary rejections, learning blocks and pool suggestions.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reports",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("idempotency_key", sa.String(160), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reporter", sa.String(128), nullable=False),
        sa.Column("client_ip", sa.String(64), nullable=False),
        sa.Column("client_name", sa.String(255), nullable=False),
        sa.Column("helo", sa.String(255), nullable=False),
        sa.Column("sender", sa.String(512), nullable=False),
        sa.Column("sender_norm", sa.String(512), nullable=False),
        sa.Column("recipient", sa.String(512), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_reports"),
        sa.UniqueConstraint("idempotency_key", name="uq_reports_idempotency_key"),
    )
    op.create_index("ix_reports_triplet", "reports", ["client_ip", "sender_norm", "recipient", "reported_at"])
    op.create_index("ix_reports_pair", "reports", ["sender_norm", "recipient", "reported_at"])
    op.create_index("ix_reports_reported_at", "reports", ["reported_at"])
    op.create_table(
        "learn_blocks",
        sa.Column("ip", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(255), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("ip", name="pk_learn_blocks"),
    )
    op.create_table(
        "suggestions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("domain", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="open"),
        sa.Column("evidence", sa.String(8000), nullable=False, server_default="[]"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("entry_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_suggestions"),
        sa.UniqueConstraint("domain", name="uq_suggestions_domain"),
    )


def downgrade() -> None:
    op.drop_table("suggestions")
    op.drop_table("learn_blocks")
    op.drop_index("ix_reports_reported_at", table_name="reports")
    op.drop_index("ix_reports_pair", table_name="reports")
    op.drop_index("ix_reports_triplet", table_name="reports")
    op.drop_table("reports")
