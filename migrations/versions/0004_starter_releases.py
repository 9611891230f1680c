"""Starter whitelist releases: which release added each builtin entry, and what was offered.

``entries.starter_release`` names the s25rbl release whose starter whitelist added an entry;
the builtin entries already in a store came from 0.1.0, the only release that had any.
``starter_offers`` holds one row per starter domain a store has been offered, so an upgrade
adds only what is new to it and never what the operator removed.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("entries", sa.Column("starter_release", sa.String(16), nullable=True))
    op.execute(sa.text("UPDATE entries SET starter_release = '0.1.0' WHERE source = 'builtin'"))
    op.create_table(
        "starter_offers",
        sa.Column("domain", sa.String(253), nullable=False),
        sa.Column("release", sa.String(16), nullable=False),
        sa.Column("offered_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("domain", name="pk_starter_offers"),
    )


def downgrade() -> None:
    op.drop_table("starter_offers")
    op.drop_column("entries", "starter_release")
