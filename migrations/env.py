"""Alembic environment: runs the versions against the async engine s25rbl uses."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from s25rbl.store.models import Base

target_metadata = Base.metadata
# Nodes that start at once on one PostgreSQL migrate one at a time: each takes this advisory
# lock (held until its transaction ends) before Alembic reads the revision, so the others then
# find the schema current instead of running the same DDL twice. Any constant shared by s25rbl.
MIGRATION_LOCK = 0x53325352  # "S2SR"


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite needs table rebuilds for ALTER
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        context.run_migrations()


async def _online(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await engine.dispose()


def main() -> None:
    url = context.config.attributes.get("s25rbl_url") or context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("no database URL: run migrations with `s25rbl migrate`")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(_online(url))


main()
