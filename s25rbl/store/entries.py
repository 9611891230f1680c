"""Repositories of the lists: entries, their version counter, and small facts about the store.

Repositories are the only place with SQL; they never commit: the unit of work does.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Select,
    Table,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from s25rbl.errors import DuplicateEntry, EntryNotFound
from s25rbl.lists.formats import StoredEntry
from s25rbl.lists.values import EntryKind, EntryRow, EntrySource, EntrySpec, ListName
from s25rbl.store.hits import write_hits
from s25rbl.store.models import Entry, ListVersion, Meta


@dataclass(frozen=True, slots=True)
class EntryFilter:
    """What to search entries by; ``None`` fields do not filter."""

    list: ListName | None = None
    kind: EntryKind | None = None
    source: EntrySource | None = None
    text: str | None = None
    include_expired: bool = True
    only_expired: bool = False
    starter_release: str | None = None  # builtin entries the starter whitelist of this release added


class _Contains(FunctionElement[bool]):
    """``column`` contains ``pattern``'s text, ignoring case; compiled per database below."""

    type = Boolean()
    inherit_cache = True
    name = "contains_text"


class _ContainsEscaped(_Contains):
    """The same, for a pattern with ``\\``-escaped ``%`` or ``_`` in it."""

    inherit_cache = True
    name = "contains_text_escaped"


def _parts(element: _Contains, compiler: Any, **kw: Any) -> tuple[str, str, str]:
    column, pattern = (compiler.process(c, **kw) for c in element.clauses)
    return column, pattern, " ESCAPE '\\'" if isinstance(element, _ContainsEscaped) else ""


@compiles(_Contains)
def _contains_default(element: _Contains, compiler: Any, **kw: Any) -> str:
    column, pattern, escape = _parts(element, compiler, **kw)
    return f"lower({column}) LIKE lower({pattern}){escape}"


@compiles(_Contains, "sqlite")
def _contains_sqlite(element: _Contains, compiler: Any, **kw: Any) -> str:
    # SQLite's LIKE already ignores ASCII case, and its lower() folds nothing more: the same
    # answers as lower() LIKE, at half the cost of a scan (no function call per row).
    column, pattern, escape = _parts(element, compiler, **kw)
    return f"{column} LIKE {pattern}{escape}"


@compiles(_Contains, "postgresql")
def _contains_postgresql(element: _Contains, compiler: Any, **kw: Any) -> str:
    column, pattern, escape = _parts(element, compiler, **kw)
    return f"{column} ILIKE {pattern}{escape}"


def contains_text(column: Any, text: str) -> ColumnElement[bool]:
    """``column`` contains ``text`` literally (``_`` and ``%`` are no wildcards), ignoring case."""
    if any(c in text for c in "\\%_"):
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return _ContainsEscaped(column, literal(f"%{escaped}%"))
    return _Contains(column, literal(f"%{text}%"))


def filtered(query: Select[Any], flt: EntryFilter, now: datetime) -> Select[Any]:
    """``query`` narrowed to the entries ``flt`` selects."""
    if flt.list is not None:
        query = query.where(Entry.list == flt.list)
    if flt.kind is not None:
        query = query.where(Entry.kind == flt.kind)
    if flt.source is not None:
        query = query.where(Entry.source == flt.source)
    if flt.starter_release is not None:
        query = query.where(Entry.starter_release == flt.starter_release)
    if flt.text:
        query = query.where(or_(contains_text(Entry.value, flt.text), contains_text(Entry.reason, flt.text)))
    if not flt.include_expired:
        query = query.where(or_(Entry.expires_at.is_(None), Entry.expires_at > now))
    if flt.only_expired:
        query = query.where(Entry.expires_at.is_not(None), Entry.expires_at <= now)
    return query


class EntryRepository:
    """Entries and the list version counter nodes poll."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(
        self,
        spec: EntrySpec,
        *,
        source: EntrySource,
        creator: str,
        now: datetime,
        expires_at: datetime | None = None,
    ) -> Entry:
        existing = await self.find(spec.list, spec.kind, spec.value)
        if existing is not None:
            raise DuplicateEntry(
                f"{spec.list}list already has {spec.kind} {spec.value!r} (entry {existing.id}, "
                f"source {existing.source}); remove it first or leave it"
            )
        entry = Entry(
            list=spec.list,
            kind=spec.kind,
            value=spec.value,
            reason=spec.reason,
            source=source,
            created_at=now,
            updated_at=now,
            created_by=creator,
            expires_at=expires_at,
            hit_count=0,
        )
        self.session.add(entry)
        try:
            async with self.session.begin_nested():
                await self.session.flush()
        except IntegrityError:
            # A concurrent writer won the race between our check and our insert.
            raise DuplicateEntry(f"{spec.list}list already has {spec.kind} {spec.value!r}") from None
        await self.bump_version(now)
        return entry

    async def add_missing(
        self, specs: Iterable[EntrySpec], *, source: EntrySource, creator: str, now: datetime
    ) -> tuple[int, int]:
        """Insert the specs not present yet, in one statement batch; (added, already present).

        One query reads the existing keys and one flush writes the rest, so 100,000 entries
        import in seconds rather than a round trip each.
        """
        specs = list(specs)
        lists = {s.list for s in specs}
        result = await self.session.execute(
            select(Entry.list, Entry.kind, Entry.value).where(Entry.list.in_(lists))
        )
        existing = {(row[0], row[1], row[2]) for row in result.all()}
        fresh = [s for s in specs if (s.list, s.kind, s.value) not in existing]
        rows = [
            {
                "list": s.list,
                "kind": s.kind,
                "value": s.value,
                "reason": s.reason,
                "source": source,
                "created_at": now,
                "updated_at": now,
                "created_by": creator,
                "hit_count": 0,
            }
            for s in fresh
        ]
        try:
            for start in range(0, len(rows), 5000):  # executemany in chunks: no ORM objects
                await self.session.execute(insert(Entry), rows[start : start + 5000])
        except IntegrityError:
            raise DuplicateEntry("the lists changed while importing; run the import again") from None
        if fresh:
            await self.bump_version(now)
        return len(fresh), len(specs) - len(fresh)

    async def find(self, list_: ListName, kind: EntryKind, value: str) -> Entry | None:
        result = await self.session.execute(
            select(Entry).where(Entry.list == list_, Entry.kind == kind, Entry.value == value)
        )
        return result.scalar_one_or_none()

    async def find_many(self, list_: ListName, kind: EntryKind, values: Collection[str]) -> dict[str, Entry]:
        """The entries of ``values`` that exist, by value (one query)."""
        if not values:
            return {}
        result = await self.session.execute(
            select(Entry).where(Entry.list == list_, Entry.kind == kind, Entry.value.in_(list(values)))
        )
        return {e.value: e for e in result.scalars()}

    async def get(self, entry_id: int) -> Entry:
        entry = await self.session.get(Entry, entry_id)
        if entry is None:
            raise EntryNotFound(f"no entry with id {entry_id}")
        return entry

    async def update(
        self,
        entry_id: int,
        now: datetime,
        *,
        reason: str | None = None,
        expires_at: datetime | None = None,
        clear_expiry: bool = False,
    ) -> Entry:
        """Change an entry's reason and/or expiry."""
        entry = await self.get(entry_id)
        if reason is not None:
            entry.reason = reason
        if expires_at is not None or clear_expiry:
            entry.expires_at = expires_at
        entry.updated_at = now
        await self.session.flush()
        await self.bump_version(now)
        return entry

    async def remove(self, entry_id: int, now: datetime) -> Entry:
        entry = await self.get(entry_id)
        await self.session.delete(entry)
        await self.bump_version(now)
        return entry

    async def search(
        self, flt: EntryFilter, now: datetime, *, after_id: int = 0, limit: int = 1000
    ) -> Sequence[Entry]:
        result = await self.session.execute(_search(select(Entry), flt, now, after_id, limit))
        return cast(Sequence[Entry], result.scalars().all())

    async def search_rows(
        self, flt: EntryFilter, now: datetime, *, after_id: int = 0, limit: int = 1000
    ) -> Sequence[StoredEntry]:
        """``search`` as plain rows, no ORM objects: an export of 100,000 entries reads in a
        fraction of the time (and memory)."""
        result = await self.session.execute(
            _search(select(*Entry.__table__.columns), flt, now, after_id, limit)
        )
        return cast(Sequence[StoredEntry], result.all())

    async def count_by_kind(self, flt: EntryFilter, now: datetime) -> dict[EntryKind, int]:
        """How many entries ``flt`` selects, by kind (kinds with none left out)."""
        query = cast(Select[Any], select(Entry.kind, func.count()))
        query = filtered(query, flt, now).group_by(Entry.kind)
        return {EntryKind(kind): int(n) for kind, n in (await self.session.execute(query)).all()}

    async def active_rows(self, now: datetime) -> list[EntryRow]:
        """The columns the indexes need, as plain rows: loads 100,000 entries in well under 2 s."""
        result = await self.session.execute(
            select(Entry.id, Entry.list, Entry.kind, Entry.value, Entry.source, Entry.expires_at)
            .where(or_(Entry.expires_at.is_(None), Entry.expires_at > now))
            .order_by(Entry.id)
        )
        return [EntryRow(*row) for row in result.all()]

    async def has_source(self, source: EntrySource) -> bool:
        result = await self.session.execute(select(Entry.id).where(Entry.source == source).limit(1))
        return result.first() is not None

    async def delete_expired(self, now: datetime, *, learned: bool) -> list[EntryRow]:
        """Remove entries past their expiry: learned ones, or the others (manual, imported).
        Returns the rows this call removed (a row another node removed first is not among them)."""
        source = Entry.source == EntrySource.LEARNED if learned else Entry.source != EntrySource.LEARNED
        result = await self.session.execute(
            delete(Entry)
            .where(Entry.expires_at.is_not(None), Entry.expires_at <= now, source)
            .returning(Entry.id, Entry.list, Entry.kind, Entry.value, Entry.source, Entry.expires_at)
        )
        removed = [EntryRow(*row) for row in result.all()]
        if removed:
            await self.bump_version(now)
        return removed

    async def record_hits(
        self, hits: dict[int, tuple[int, datetime]], learned_lifetime: timedelta | None = None
    ) -> None:
        """Add batched hit counts, and renew learned entries that are still being seen.

        Does not move the version: neither changes an answer now.
        """
        if not hits:
            return
        if await write_hits(self.session, hits, learned_lifetime):
            return
        table = cast(Table, Entry.__table__)
        when = table.c.last_hit_at.type
        values: dict[str, Any] = {
            "hit_count": table.c.hit_count + bindparam("b_count"),
            "last_hit_at": bindparam("b_last", type_=when),
        }
        if learned_lifetime is not None:
            renewed = bindparam("b_renewed", type_=when)
            values["expires_at"] = case(
                (and_(table.c.source == EntrySource.LEARNED, table.c.expires_at < renewed), renewed),
                else_=table.c.expires_at,
            )
        # Any other driver: one executemany statement, each row through SQLAlchemy's binds.
        statement = update(table).where(table.c.id == bindparam("b_id")).values(**values)
        rows = [
            {"b_id": entry_id, "b_count": count, "b_last": last}
            | ({} if learned_lifetime is None else {"b_renewed": last + learned_lifetime})
            for entry_id, (count, last) in hits.items()
        ]
        await self.session.execute(statement, rows)

    async def bump_version(self, now: datetime) -> None:
        await self.session.execute(
            update(ListVersion)
            .where(ListVersion.id == 1)
            .values(version=ListVersion.version + 1, changed_at=now)
        )

    async def version(self) -> int:
        result = await self.session.execute(select(ListVersion.version).where(ListVersion.id == 1))
        return int(result.scalar_one_or_none() or 0)


def _search(query: Select[Any], flt: EntryFilter, now: datetime, after_id: int, limit: int) -> Select[Any]:
    """The entries ``flt`` selects after ``after_id``, in id order, at most ``limit``."""
    return filtered(query.where(Entry.id > after_id), flt, now).order_by(Entry.id).limit(limit)


class MetaRepository:
    """Small key/value facts about this database."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, key: str) -> str | None:
        row = await self.session.get(Meta, key)
        return row.value if row is not None else None

    async def set(self, key: str, value: str) -> None:
        row = await self.session.get(Meta, key)
        if row is None:
            self.session.add(Meta(key=key, value=value))
        else:
            row.value = value
