"""Engine, migrations and the unit of work: one transaction per request, committed at the edge."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from s25rbl.errors import InvalidEntry, StoreMissing, StoreUnavailable

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
COMMAND_TIMEOUT = 30.0
CONNECTIONS = 15  # the pool's bound: 5 kept open, 10 more opened while busy
POOL_TIMEOUT = 5.0  # seconds to wait for a free connection before the store counts as unavailable
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


def migrate(url: str, revision: str = "head", *, create_folder: bool = False) -> str:
    """Move the database at ``url`` to ``revision`` (default: the newest), upgrading or
    downgrading; ``base`` removes every table. Returns what was done (``upgraded``,
    ``downgraded``, ``current``). A SQLite file is created if needed, and its folder only with
    ``create_folder`` (the default state directory): a mistyped path is an error, not a new store.

    Processes that start at once migrate one after the other: on PostgreSQL the migration
    environment takes an advisory lock; a SQLite file is locked here (``flock`` on the file
    itself, which SQLite's own ``fcntl`` locks do not see), so the second finds it current.
    """
    from alembic import command

    cfg = _alembic_config(url)
    target = resolve_revision(revision)
    path = sqlite_path(url)
    if path is not None and not create_folder and not path.parent.is_dir():
        raise StoreMissing(
            f"no folder {path.parent} for the SQLite store {_safe(url)}: create it, or correct database.url"
        )
    try:
        with _migrating(path):
            now = _revision_now(url)
            order = _revisions()
            if target in order and now in order and order.index(target) < order.index(now):
                command.downgrade(cfg, target or "base")
                return "downgraded"
            if target == now:
                return "current"
            command.upgrade(cfg, target or "base")
            return "upgraded"
    except (OperationalError, DBAPIError, OSError) as exc:
        raise StoreUnavailable(f"cannot migrate {_safe(url)}: {_first_line(exc)}") from None


def _alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    cfg.attributes["s25rbl_url"] = async_url(url)
    return cfg


def _revisions() -> list[str | None]:
    """Every revision, oldest first, after None (``base``: no schema)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(migrations_dir()))
    return [None, *reversed([r.revision for r in script.walk_revisions()])]


def resolve_revision(name: str) -> str | None:
    """The revision ``name`` means (``head``, ``base``, an id such as ``0003`` or a unique
    prefix of one); a name that means none is refused naming the revisions there are."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    script = ScriptDirectory(str(migrations_dir()))
    if name == "base":
        return None
    try:
        found = script.get_revision(name)
    except (CommandError, KeyError, ValueError):
        found = None
    if found is None:
        known = ", ".join(str(r) for r in _revisions()[1:])
        raise InvalidEntry("--revision", f"no revision {name!r} (there are: head, base, {known})")
    return str(found.revision)


def require_schema(url: str) -> None:
    """Refuse a store that is not there (no SQLite file) or was never migrated: only ``serve``
    and ``migrate`` create one, so a mistyped path cannot become a new, empty store."""
    path = sqlite_path(url)
    hint = "run `s25rbl migrate` (or start `s25rbl serve`) with this configuration first"
    if path is not None and not path.is_file():
        raise StoreMissing(f"no store at {_safe(url)} (no such file): {hint}, or correct database.url")
    if _revision_now(url) is None:
        raise StoreMissing(f"the store at {describe_store(url)} is not set up (no schema): {hint}")


def _revision_now(url: str) -> str | None:
    try:
        return current_revision(url)
    except (OperationalError, DBAPIError, OSError, asyncpg.PostgresError) as exc:
        raise StoreUnavailable(f"store {describe_store(url)} unreachable: {_first_line(exc)}") from None


def describe_store(url: str) -> str:
    """The store as an operator recognises it: the URL without its password, with host:port
    for a server (PostgreSQL's default port spelt out)."""
    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite") or (parsed.host is not None and parsed.port is not None):
        return _safe(url)
    where = parsed.host or parsed.query.get("host") or "local socket"
    return f"{_safe(url)} ({where}:{parsed.port or 5432})"


@contextmanager
def _migrating(path: Path | None) -> Iterator[None]:
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)  # create_folder said so, or it is there
    with open(path, "ab") as held:  # an empty file is an empty SQLite database
        fcntl.flock(held, fcntl.LOCK_EX)
        yield


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


def create_engine(
    url: str, connections: int = CONNECTIONS, pool_timeout: float = POOL_TIMEOUT
) -> AsyncEngine:
    target = async_url(url)
    connect_args: dict[str, Any] = {}
    if target.startswith("postgresql+asyncpg"):
        # Fail fast when the database is away: an API call answers 503 in seconds, not minutes.
        connect_args = {"timeout": CONNECT_TIMEOUT, "command_timeout": COMMAND_TIMEOUT}
    kept = min(5, connections)
    engine = create_async_engine(
        target,
        pool_pre_ping=True,
        connect_args=connect_args,
        pool_size=kept,
        max_overflow=connections - kept,
        pool_timeout=pool_timeout,
    )
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
    """The database handle every part shares: an engine and the unit of work.

    ``connections`` bounds the pool; a unit of work that finds none free within
    ``pool_timeout`` seconds fails with StoreUnavailable (503), like a database that is away.
    On SQLite, the file's identity (device and inode) is checked before every unit of work: a
    file deleted or replaced under the running server makes the store unavailable instead of
    taking writes into a file nobody will ever open again.
    """

    def __init__(
        self, url: str, *, connections: int = CONNECTIONS, pool_timeout: float = POOL_TIMEOUT
    ) -> None:
        self.url = url
        self.engine = create_engine(url, connections, pool_timeout)
        self._pool_timeout = pool_timeout
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._open = 0  # units of work of this process in progress
        self._quiet: asyncio.Event | None = None
        self._file = sqlite_path(url)
        self._identity = _identity(self._file) if self._file is not None else None
        self._lost = False  # the file is gone or replaced (logged once per episode)

    def _check_file(self) -> None:
        if self._file is None:
            return
        now = _identity(self._file)
        if self._identity is None:
            self._identity = now  # the first unit of work creates the file
            return
        if now == self._identity:
            if self._lost:
                log.warning("the SQLite file %s is back; the store is usable again", self._file)
                self._lost = False
            return
        problem = "deleted" if now is None else "replaced by another file"
        if not self._lost:
            log.error(
                "the SQLite file %s was %s while s25rbl ran: writes are refused (503) and DNS answers "
                "from the lists in memory; put the file back, or restart s25rbl to open the file now "
                "at that path",
                self._file,
                problem,
            )
            self._lost = True
        raise StoreUnavailable(f"the SQLite file {self._file} was {problem}; restart s25rbl to open it again")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """One unit of work: commit when the block ends, roll back if it raises."""
        self._check_file()
        self._open += 1
        try:
            async with self._sessions() as session, session.begin():
                yield session
        except PoolTimeout:
            raise StoreUnavailable(
                f"database {_safe(self.url)} busy: no connection free within {self._pool_timeout:g} s"
            ) from None
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"database {_safe(self.url)} unavailable: {_first_line(exc)}") from None
        except DBAPIError as exc:
            if exc.connection_invalidated or _caused_by_unavailable(exc):
                raise StoreUnavailable(
                    f"database {_safe(self.url)} unavailable: {_first_line(exc)}"
                ) from None
            raise
        finally:
            self._open -= 1
            if self._open == 0 and self._quiet is not None:
                self._quiet.set()
        if self._identity is None:
            self._check_file()

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


def _caused_by_unavailable(exc: BaseException) -> bool:
    """Whether a driver error wraps one that means "not there right now": a PostgreSQL that is
    starting up ("not yet accepting connections") reaches us as a plain DBAPIError."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if cause is not exc and isinstance(cause, _UNAVAILABLE):
            return True
        cause = getattr(cause, "orig", None) or cause.__cause__
    return False


def _identity(path: Path) -> tuple[int, int] | None:
    """The file's (device, inode), or None if there is no such file: one stat, about a microsecond."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _safe(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).splitlines()[0] if str(orig) else type(orig).__name__
