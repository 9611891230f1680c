"""The policy service's state: greylisted triplets, tarpitted sessions and the passes learning counts.

Unique constraints settle races between nodes: a triplet is created once (``key``), a session
is tarpitted and passes once (``client_ip``, ``instance``).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "policy_triplets",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key", sa.String(32), nullable=False),
        sa.Column("network", sa.String(64), nullable=False),
        sa.Column("sender", sa.String(512), nullable=False),
        sa.Column("recipient", sa.String(512), nullable=False),
        sa.Column("client_ip", sa.String(64), nullable=False),
        _time("first_seen"),
        _time("last_seen"),
        _time("passed_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_policy_triplets"),
        sa.UniqueConstraint("key", name="uq_policy_triplets_key"),
    )
    op.create_index("ix_policy_triplets_network", "policy_triplets", ["network"])
    op.create_index("ix_policy_triplets_first_seen", "policy_triplets", ["first_seen"])
    op.create_index("ix_policy_triplets_last_seen", "policy_triplets", ["last_seen"])
    op.create_table(
        "policy_tarpits",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("client_ip", sa.String(64), nullable=False),
        sa.Column("instance", sa.String(64), nullable=False),
        _time("started_at"),
        _time("survived_at", nullable=True),
        _time("delivered_at", nullable=True),
        sa.Column("client_name", sa.String(255), nullable=False, server_default=""),
        sa.Column("sender", sa.String(512), nullable=False, server_default=""),
        sa.Column("recipient", sa.String(512), nullable=False, server_default=""),
        sa.Column("mta", sa.String(64), nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("id", name="pk_policy_tarpits"),
        sa.UniqueConstraint("client_ip", "instance", name="uq_policy_tarpits_client_ip_instance"),
    )
    op.create_index("ix_policy_tarpits_client", "policy_tarpits", ["client_ip", "started_at"])
    op.create_index("ix_policy_tarpits_started_at", "policy_tarpits", ["started_at"])
    op.create_table(
        "policy_passes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("client_ip", sa.String(64), nullable=False),
        sa.Column("instance", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        _time("at"),
        sa.Column("client_name", sa.String(255), nullable=False, server_default=""),
        sa.Column("helo", sa.String(255), nullable=False, server_default=""),
        sa.Column("sender", sa.String(512), nullable=False, server_default=""),
        sa.Column("recipient", sa.String(512), nullable=False, server_default=""),
        _time("learned_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_policy_passes"),
        sa.UniqueConstraint("client_ip", "instance", name="uq_policy_passes_client_ip_instance"),
    )
    op.create_index("ix_policy_passes_client", "policy_passes", ["client_ip", "at"])
    op.create_index("ix_policy_passes_at", "policy_passes", ["at"])


def downgrade() -> None:
    op.drop_index("ix_policy_passes_at", table_name="policy_passes")
    op.drop_index("ix_policy_passes_client", table_name="policy_passes")
    op.drop_table("policy_passes")
    op.drop_index("ix_policy_tarpits_started_at", table_name="policy_tarpits")
    op.drop_index("ix_policy_tarpits_client", table_name="policy_tarpits")
    op.drop_table("policy_tarpits")
    op.drop_index("ix_policy_triplets_last_seen", table_name="policy_triplets")
    op.drop_index("ix_policy_triplets_first_seen", table_name="policy_triplets")
    op.drop_index("ix_policy_triplets_network", table_name="policy_triplets")
    op.drop_table("policy_triplets")
