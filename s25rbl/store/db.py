"""Engine, migrations and the unit of work: one transaction per request, committed at the edge."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from s25rbl.errors import StoreUnavailable

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
COMMAND_TIMEOUT = 30.0
# Errors that mean "the database is not there right now", as opposed to a bad statement.
# asyncpg raises its own errors while (re)connecting, before SQLAlchemy can wrap them.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
)
_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
}


def async_url(url: str) -> str:
    """Map the URL an operator writes (``sqlite:///...``) to the async driver we run."""
    parsed = make_url(url)
    driver = _DRIVERS.get(parsed.drivername)
    if driver is not None:
        parsed = parsed.set(drivername=driver)
    return parsed.render_as_string(hide_password=False)


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def migrations_dir() -> Path:
    """The Alembic scripts: inside the installed wheel, or at the top of a source checkout."""
    packaged = Path(__file__).resolve().parent.parent / "_migrations"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent.parent / "migrations"


def migrate(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` (creating a SQLite file and its folder if needed)."""
    from alembic import command
    from alembic.config import Config

    path = sqlite_path(url)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["s25rbl_url"] = async_url(url)
    try:
        command.upgrade(cfg, revision)
    except (OperationalError, DBAPIError, OSError) as exc:
        raise StoreUnavailable(f"cannot migrate {_safe(url)}: {_first_line(exc)}") from None


def current_revision(url: str) -> str | None:
    async def read() -> str | None:
        from alembic.runtime.migration import MigrationContext

        engine = create_engine(url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())
        finally:
            await engine.dispose()

    return asyncio.run(read())


def create_engine(url: str) -> AsyncEngine:
    target = async_url(url)
    connect_args: dict[str, Any] = {}
    if target.startswith("postgresql+asyncpg"):
        # Fail fast when the database is away: an API call answers 503 in seconds, not minutes.
        connect_args = {"timeout": CONNECT_TIMEOUT, "command_timeout": COMMAND_TIMEOUT}
    engine = create_async_engine(target, pool_pre_ping=True, connect_args=connect_args)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets the CLI write while a server reads; busy_timeout makes writers queue
            # instead of failing with "database is locked".
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

    return engine


class Store:
    """The database handle every part shares: an engine and the unit of work."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_engine(url)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._open = 0  # units of work of this process in progress
        self._quiet: asyncio.Event | None = None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: commit when the block ends, roll back if it raises."""
        self._open += 1
        try:
            async with self._sessions() as session, session.begin():
                yield session
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"database {_safe(self.url)} unavailable: {_first_line(exc)}") from None
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise StoreUnavailable(
                    f"database {_safe(self.url)} unavailable: {_first_line(exc)}"
                ) from None
            raise
        finally:
            self._open -= 1
            if self._open == 0 and self._quiet is not None:
                self._quiet.set()

    async def after_others(self, limit: float) -> None:
        """For a bulk writer between two of its units of work: on SQLite (one writer at a time,
        and waiting writers poll, so the busiest one wins), wait until no other unit of work
        of this process is open, at most ``limit`` seconds, so an operator's write goes first."""
        if self.engine.dialect.name != "sqlite" or self._open == 0:
            return
        if self._quiet is None:
            self._quiet = asyncio.Event()
        self._quiet.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._quiet.wait(), limit)

    async def close(self) -> None:
        await self.engine.dispose()


def _safe(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).splitlines()[0] if str(orig) else type(orig).__name__
