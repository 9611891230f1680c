"""Entries' hit counts written straight through the database driver (``record_hits``).

A flush writes up to ~100,000 entries every 30 s. Through SQLAlchemy's compiled UPDATE each
row's parameters went through its bind processing (a dict per row, the UTCDateTime and
DateTime processors per timestamp): ~20 µs of CPU per entry, most of it on the event loop.
Here the statement is written once per dialect and the rows handed to the driver's
``executemany`` as tuples (``store.driver``): each distinct timestamp converted once (on
SQLite to its text by ``isoformat``, checked against SQLAlchemy's own text), the learned
entries' renewal worked out in SQL.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from s25rbl.lists.values import EntrySource
from s25rbl.store.driver import converted_once, handled, sqlite_text, timestamp_converter
from s25rbl.store.models import Entry


async def write_hits(
    session: AsyncSession, hits: dict[int, tuple[int, datetime]], learned_lifetime: timedelta | None
) -> bool:
    """Add ``hits`` to the entries in the session's transaction; False when this database's
    driver takes a parameter style not handled here (the caller writes them another way)."""
    connection = await session.connection()
    dialect = connection.dialect
    if not handled(dialect):
        return False
    table = cast(Table, Entry.__table__)
    convert = timestamp_converter(table.c.last_hit_at, dialect)
    # SQLite's text: the renewal is the last hit's text moved by whole seconds in SQL, so each
    # row costs one timestamp converted in Python, not two.
    shift = _whole_seconds(learned_lifetime) if convert is sqlite_text else None
    mark = "?" if dialect.paramstyle == "qmark" else "$"
    statement = _statement(mark, learned_lifetime is not None, shift)
    # Hits share their dates (one per second): each distinct one is converted once.
    renewal = learned_lifetime if shift is None else None  # worked out here, not in SQL
    last_text = converted_once(convert)
    rows: list[tuple[Any, ...]]
    if renewal is None:
        rows = [(count, last_text(last), entry_id) for entry_id, (count, last) in hits.items()]
    else:
        renewed = converted_once(lambda at: convert(at + renewal))
        rows = [(count, last_text(last), renewed(last), entry_id) for entry_id, (count, last) in hits.items()]
    await connection.exec_driver_sql(statement, rows)
    return True


def _whole_seconds(lifetime: timedelta | None) -> int | None:
    if lifetime is None or lifetime.microseconds:
        return None
    return lifetime.days * 86400 + lifetime.seconds


def _statement(mark: str, renew: bool, shift: int | None) -> str:
    """The UPDATE of one entry (parameters: hits, last hit, [renewal,] id; ``mark``: "?" or
    "$", numbered): its count added to, its last hit set, and with ``renew`` a learned entry's
    expiry moved to the renewal time if that is later (NULL stays NULL). With ``shift``, the
    renewal is worked out from the last hit's SQLite text: its whole seconds moved by
    ``shift`` seconds (the fraction left out, so that it cannot round up), its fraction kept."""
    learned = EntrySource.LEARNED.value
    assert learned.isalnum()  # a fixed word, written into the statement as it is
    sets = f"hit_count = hit_count + {mark}1, last_hit_at = {mark}2"
    entry = f"{mark}3"
    if renew:
        if shift is None:
            renewed, entry = f"{mark}3", f"{mark}4"
        else:
            renewed = (
                f"(strftime('%Y-%m-%d %H:%M:%S', substr({mark}2, 1, 19), '+{shift:d} seconds')"
                f" || substr({mark}2, 20))"
            )
        sets += (
            f", expires_at = CASE WHEN source = '{learned}' AND expires_at < {renewed} "
            f"THEN {renewed} ELSE expires_at END"
        )
    return f"UPDATE {Entry.__tablename__} SET {sets} WHERE id = {entry}"
