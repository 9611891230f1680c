"""Learning trusts only what s25rbl saw itself: when a report arrived, what s25rbl answered for
the address then, and the name s25rbl confirmed for it.

- ``counts``: the report is an attempt that counts towards learning (s25rbl listed the address
  with .2 or .4 when it arrived, and no revocation since). Reports stored before this revision
  were never judged: they do not count (they leave the retry window within its length).
- ``code``: the blocklist code s25rbl answered for the address when the report arrived.
- ``confirmed_name``: s25rbl's own forward-confirmed name for it then; ``pool_domain``: that
  name's registrable domain, computed once, so pool suggestions find their members by index.
- Retries count by ``received_at``: the triplet, pool and expiry indexes move to it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("reports") as batch:
        batch.add_column(sa.Column("counts", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("code", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("confirmed_name", sa.String(255), nullable=False, server_default=""))
        batch.add_column(sa.Column("pool_domain", sa.String(255), nullable=False, server_default=""))
    op.drop_index("ix_reports_triplet", table_name="reports")
    op.drop_index("ix_reports_pair", table_name="reports")
    op.drop_index("ix_reports_reported_at", table_name="reports")
    op.create_index("ix_reports_triplet", "reports", ["client_ip", "sender_norm", "recipient", "received_at"])
    op.create_index("ix_reports_pool", "reports", ["sender_norm", "recipient", "pool_domain", "received_at"])
    op.create_index("ix_reports_received_at", "reports", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_reports_received_at", table_name="reports")
    op.drop_index("ix_reports_pool", table_name="reports")
    op.drop_index("ix_reports_triplet", table_name="reports")
    with op.batch_alter_table("reports") as batch:
        batch.drop_column("pool_domain")
        batch.drop_column("confirmed_name")
        batch.drop_column("code")
        batch.drop_column("counts")
    op.create_index("ix_reports_triplet", "reports", ["client_ip", "sender_norm", "recipient", "reported_at"])
    op.create_index("ix_reports_pair", "reports", ["sender_norm", "recipient", "reported_at"])
    op.create_index("ix_reports_reported_at", "reports", ["reported_at"])
