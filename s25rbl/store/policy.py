"""Repositories of the policy service: greylisted triplets, tarpitted sessions, passes.

Races between nodes are settled by the database, never by reading first: rows are inserted
with ON CONFLICT DO NOTHING on their unique keys, and a pass is the UPDATE that finds the row
not yet passed (``rowcount`` 1 on exactly one node). The listener's reads are single
statements (``DirectReads``), built by the same functions as the repositories'.
"""

from __future__ import annotations

import collections
import sqlite3
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import Select, bindparam, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.expression import Executable

from s25rbl.errors import EntryNotFound, StoreUnavailable
from s25rbl.store import driver
from s25rbl.store.db import Store, sqlite_path
from s25rbl.store.models import GreylistTriplet, PolicyPass, TarpitRecord, UTCDateTime

Row = Mapping[str, Any]


def _insert_ignoring_duplicates(session: AsyncSession, model: Any, keys: list[str]) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING into ``model``'s table: a Core statement (the ORM's
    bulk insert of the same rows costs twice the Python, and nothing here needs objects)."""
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    module: Any = postgresql if dialect == "postgresql" else sqlite
    return module.insert(model.__table__).on_conflict_do_nothing(index_elements=keys)


INSERT_SLICE = 64  # rows per statement through SQLAlchemy (the event loop serves requests between two)


async def _insert_in_slices(session: AsyncSession, model: Any, keys: list[str], rows: Sequence[Row]) -> None:
    """Insert ``rows`` ignoring duplicates: through the driver (``store.driver``, ~2 µs a row
    of the event loop's CPU) where it takes our statements, else through SQLAlchemy in
    statements of at most INSERT_SLICE rows, each prepared on the event loop in one go (~15 µs
    a row), so that a batch of a thousand does not hold every request back for ~15 ms."""
    if not rows:
        return
    connection = await session.connection()
    if driver.handled(connection.dialect):
        await driver.insert_ignoring(connection, model.__table__, keys, rows)
        return
    statement = _insert_ignoring_duplicates(session, model, keys)
    for start in range(0, len(rows), INSERT_SLICE):
        await session.execute(statement, list(rows[start : start + INSERT_SLICE]))


def _count(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


@dataclass(frozen=True, slots=True)
class PolicyFilter:
    """What to search triplets and tarpit records by; ``None`` does not filter."""

    client: str | None = None  # an address or network: the rows of that client (network)
    text: str | None = None  # in the sender or the recipient
    passed: bool | None = None  # triplets: passed or waiting; tarpits: survived or not


# The listener's two reads, built once: the keys are an expanding parameter, so every call
# reuses the compiled statement instead of building and caching a new one (~0.3 ms each).
_T, _R = GreylistTriplet, TarpitRecord
TRIPLET_STATES = select(_T.key, _T.first_seen, _T.passed_at).where(
    _T.key.in_(bindparam("keys", expanding=True))
)
"""(key, first attempt, pass) of the triplets of ``keys`` that exist."""
_LAST = (
    select(_R.client_ip, func.max(_R.started_at).label("started_at"))
    .where(_R.client_ip.in_(bindparam("keys", expanding=True)))
    .group_by(_R.client_ip)
    .subquery()
)
LATEST_TARPITS = select(_R.client_ip, _R.instance, _R.started_at, _R.survived_at, _R.delivered_at).join(
    _LAST, (_R.client_ip == _LAST.c.client_ip) & (_R.started_at == _LAST.c.started_at)
)
"""The latest tarpitted session of each client of ``keys`` that has one."""


_Compiled = tuple[str, Callable[[Iterable[Any]], Any], tuple[int, ...]]  # SQL, row maker, date-times


class DirectReads:
    """Single statements outside a unit of work: the policy listener's reads, as cheap as can
    be. PostgreSQL: one autocommit statement on the async engine. SQLite: a plain call on the
    event loop itself, an indexed read of a local file through the ``sqlite3`` module (~10 µs;
    the same statement through SQLAlchemy's engine costs ~100 µs of Python), where every
    hand-off to a database thread costs more, and milliseconds on a busy CPU; a reader of a WAL
    database is not blocked by writers, and ``busy_timeout`` bounds any wait to 20 ms."""

    def __init__(self, store: Store) -> None:
        self._engine = store.engine
        self._path = sqlite_path(store.url)
        self._held: sqlite3.Connection | None = None
        self._compiled: dict[
            tuple[int, int], tuple[str, Callable[[Iterable[Any]], Any], tuple[int, ...]]
        ] = {}

    @property
    def synchronous(self) -> bool:
        """Reads are plain calls (SQLite): ``rows_now`` may be used instead of ``rows``."""
        return self._path is not None

    async def rows(self, statement: Executable, keys: Sequence[str]) -> list[Any]:
        """The rows of ``statement`` for ``keys``; StoreUnavailable when the store cannot answer."""
        if self._path is not None:
            return self.rows_now(statement, keys)
        try:
            async with self._engine.connect() as connection:
                await connection.execution_options(isolation_level="AUTOCOMMIT")
                return list((await connection.execute(statement, {"keys": list(keys)})).all())
        except (SQLAlchemyError, OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise _unavailable(exc) from None

    def rows_now(self, statement: Executable, keys: Sequence[str]) -> list[Any]:
        """``rows``, as a plain call: SQLite only (``synchronous``). Rows are named tuples of the
        statement's columns, date-times as aware UTC ``datetime`` objects, as the engine gives."""
        assert self._path is not None
        sql, row, stamps = self._compile(statement, len(keys))
        try:
            if self._held is None:
                self._held = _connect_reader(self._path)
            found = self._held.execute(sql, tuple(keys)).fetchall()
        except (sqlite3.Error, OSError) as exc:
            if self._held is not None:
                self._held.close()  # a fresh one next time
                self._held = None
            raise _unavailable(exc) from None
        if not stamps:
            return [row(values) for values in found]
        return [row(_with_stamps(values, stamps)) for values in found]

    def _compile(self, statement: Executable, count: int) -> _Compiled:
        """SQLite's text of ``statement`` for ``count`` keys, its row type and which of its
        columns are date-times: made once per statement and number of keys."""
        cache_key = (id(statement), count)
        known = self._compiled.get(cache_key)
        if known is not None:
            return known
        select_ = typing.cast(Select[Any], statement)
        compiled = select_.params(keys=[""] * count).compile(
            dialect=sqlite.dialect(), compile_kwargs={"render_postcompile": True}
        )
        columns = list(select_.selected_columns)
        row = collections.namedtuple("Row", [column.name for column in columns])  # type: ignore[misc]
        stamps = tuple(i for i, column in enumerate(columns) if isinstance(column.type, UTCDateTime))
        made = (str(compiled), row._make, stamps)
        if len(self._compiled) < 64:  # a handful of statements and key counts ever
            self._compiled[cache_key] = made
        return made

    def close(self) -> None:
        if self._held is not None:
            self._held.close()
            self._held = None


def _connect_reader(path: Path) -> sqlite3.Connection:
    """A read-only autocommit connection: each statement reads the latest commit."""
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA busy_timeout=20")  # it runs on the event loop: never wait long
        connection.execute("PRAGMA query_only=ON")
    except sqlite3.Error:
        connection.close()
        raise
    return connection


def _with_stamps(values: tuple[Any, ...], stamps: tuple[int, ...]) -> list[Any]:
    """SQLite keeps date-times as text in UTC ("2026-12-01 19:00:00.000000"): as aware ones."""
    out = list(values)
    for i in stamps:
        text = out[i]
        if text is not None:
            out[i] = datetime.fromisoformat(text).replace(tzinfo=UTC)
    return out


def _unavailable(exc: BaseException) -> StoreUnavailable:
    return StoreUnavailable(f"policy state unreadable: {str(exc).splitlines()[0] if str(exc) else exc!r}")


class TripletRepository:
    """Greylisted triplets, by their digest ``key``."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def states(self, keys: Sequence[str]) -> dict[str, tuple[datetime, datetime | None]]:
        """(first attempt, pass) of each of the triplets that exist, by key."""
        result = await self.session.execute(TRIPLET_STATES, {"keys": list(keys)})
        return {row[0]: (row[1], row[2]) for row in result.all()}

    async def create(self, rows: Sequence[Row]) -> None:
        """Insert the triplets not present yet; one that is present keeps its first attempt."""
        await _insert_in_slices(self.session, GreylistTriplet, ["key"], rows)

    async def reset(self, key: str, at: datetime, older_than: datetime) -> int:
        """An unpassed triplet whose first attempt is older than ``older_than`` starts afresh."""
        result = await self.session.execute(
            update(GreylistTriplet)
            .where(
                GreylistTriplet.key == key,
                GreylistTriplet.passed_at.is_(None),
                GreylistTriplet.first_seen < older_than,
            )
            .values(first_seen=at, last_seen=at)
        )
        return _count(result)

    async def mark_passed(self, key: str, at: datetime) -> bool:
        """True on the one call that finds the triplet not yet passed."""
        result = await self.session.execute(
            update(GreylistTriplet)
            .where(GreylistTriplet.key == key, GreylistTriplet.passed_at.is_(None))
            .values(passed_at=at, last_seen=at)
        )
        return _count(result) == 1

    async def touch(self, keys: Iterable[str], at: datetime) -> None:
        keys = list(keys)
        if keys:
            await self.session.execute(
                update(GreylistTriplet)
                .where(GreylistTriplet.key.in_(keys), GreylistTriplet.last_seen < at)
                .values(last_seen=at)
            )

    async def search(
        self, flt: PolicyFilter, *, after_id: int = 0, limit: int = 100
    ) -> Sequence[GreylistTriplet]:
        query = select(GreylistTriplet).where(GreylistTriplet.id > after_id)
        if flt.client is not None:
            query = query.where(GreylistTriplet.network == flt.client)
        if flt.text:
            like = f"%{flt.text.lower()}%"
            query = query.where(
                or_(func.lower(GreylistTriplet.sender).like(like), GreylistTriplet.recipient.like(like))
            )
        if flt.passed is not None:
            passed = GreylistTriplet.passed_at
            query = query.where(passed.is_not(None) if flt.passed else passed.is_(None))
        result = await self.session.execute(query.order_by(GreylistTriplet.id).limit(limit))
        return result.scalars().all()

    async def delete(self, triplet_id: int) -> GreylistTriplet:
        row = await self.session.get(GreylistTriplet, triplet_id)
        if row is None:
            raise EntryNotFound(f"no greylisted triplet with id {triplet_id}")
        await self.session.delete(row)
        return row

    async def delete_expired(self, unretried_before: datetime, unseen_before: datetime) -> int:
        """Triplets never passed whose first attempt is older than the retry window, and passed
        ones not seen for ``max_age``."""
        result = await self.session.execute(
            delete(GreylistTriplet).where(
                or_(
                    (GreylistTriplet.passed_at.is_(None)) & (GreylistTriplet.first_seen < unretried_before),
                    (GreylistTriplet.passed_at.is_not(None)) & (GreylistTriplet.last_seen < unseen_before),
                )
            )
        )
        return _count(result)

    async def count(self) -> int:
        return int((await self.session.execute(select(func.count(GreylistTriplet.id)))).scalar_one())


class TarpitRepository:
    """Tarpitted sessions, one row per (client address, instance)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def latest(self, client_ips: Sequence[str]) -> dict[str, Any]:
        """The latest tarpitted session of each of the clients that have one: rows of
        (client_ip, instance, started_at, survived_at, delivered_at)."""
        result = await self.session.execute(LATEST_TARPITS, {"keys": list(client_ips)})
        return {row.client_ip: row for row in result.all()}

    async def start(self, rows: Sequence[Row]) -> None:
        """Record tarpitted sessions; a session recorded already stays as it is."""
        await _insert_in_slices(self.session, TarpitRecord, ["client_ip", "instance"], rows)

    async def survive(self, client_ip: str, instance: str, at: datetime) -> bool:
        result = await self.session.execute(
            update(TarpitRecord)
            .where(
                TarpitRecord.client_ip == client_ip,
                TarpitRecord.instance == instance,
                TarpitRecord.survived_at.is_(None),
            )
            .values(survived_at=at)
        )
        return _count(result) == 1

    async def deliver(self, client_ip: str, instance: str, at: datetime) -> bool:
        """True on the one call that finds the session's message not yet delivered."""
        result = await self.session.execute(
            update(TarpitRecord)
            .where(
                TarpitRecord.client_ip == client_ip,
                TarpitRecord.instance == instance,
                TarpitRecord.delivered_at.is_(None),
            )
            .values(delivered_at=at, survived_at=func.coalesce(TarpitRecord.survived_at, at))
        )
        return _count(result) == 1

    async def search(
        self, flt: PolicyFilter, *, after_id: int = 0, limit: int = 100
    ) -> Sequence[TarpitRecord]:
        query = select(TarpitRecord).where(TarpitRecord.id > after_id)
        if flt.client is not None:
            query = query.where(TarpitRecord.client_ip == flt.client)
        if flt.text:
            like = f"%{flt.text.lower()}%"
            query = query.where(
                or_(func.lower(TarpitRecord.sender).like(like), func.lower(TarpitRecord.recipient).like(like))
            )
        if flt.passed is not None:
            survived = TarpitRecord.survived_at
            query = query.where(survived.is_not(None) if flt.passed else survived.is_(None))
        result = await self.session.execute(query.order_by(TarpitRecord.id).limit(limit))
        return result.scalars().all()

    async def delete(self, record_id: int) -> TarpitRecord:
        row = await self.session.get(TarpitRecord, record_id)
        if row is None:
            raise EntryNotFound(f"no tarpit record with id {record_id}")
        await self.session.delete(row)
        return row

    async def delete_older_than(self, cutoff: datetime) -> int:
        return _count(
            await self.session.execute(delete(TarpitRecord).where(TarpitRecord.started_at < cutoff))
        )


class PassRepository:
    """Passes seen by the policy service, at most one per SMTP session."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, row: Row) -> bool:
        """True if recorded; False if this session passed already (maybe on another node)."""
        statement = _insert_ignoring_duplicates(self.session, PolicyPass, ["client_ip", "instance"])
        return _count(await self.session.execute(statement.values(dict(row)))) == 1

    async def unused(self, client_ip: str, since: datetime) -> Sequence[PolicyPass]:
        """The passes since ``since`` that no learning has used yet, oldest first."""
        result = await self.session.execute(
            select(PolicyPass)
            .where(PolicyPass.client_ip == client_ip, PolicyPass.at >= since, PolicyPass.learned_at.is_(None))
            .order_by(PolicyPass.at)
            .limit(1000)
        )
        return result.scalars().all()

    async def use(self, ids: Iterable[int], at: datetime) -> None:
        ids = list(ids)
        if ids:
            await self.session.execute(update(PolicyPass).where(PolicyPass.id.in_(ids)).values(learned_at=at))

    async def for_ip(self, client_ip: str, limit: int = 50) -> Sequence[PolicyPass]:
        result = await self.session.execute(
            select(PolicyPass)
            .where(PolicyPass.client_ip == client_ip)
            .order_by(PolicyPass.at.desc())
            .limit(limit)
        )
        return result.scalars().all()

    async def delete_older_than(self, cutoff: datetime) -> int:
        return _count(await self.session.execute(delete(PolicyPass).where(PolicyPass.at < cutoff)))
