"""Store reads gathered into batches: every key asked for while one query is out goes into the
next, so a busy node makes one round trip for many requests, not one each (and, on SQLite,
one set of hand-offs to the database thread)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from s25rbl.errors import StoreUnavailable

T = TypeVar("T")

MAX_BATCH = 500  # keys in one query


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # a waiter that went away must not leave an unretrieved error


class BatchReader(Generic[T]):
    """``get(key)``: the row of ``key`` (None: there is none), read with others in one query.

    ``read_many`` returns the rows found, by key. A query that fails or takes longer than
    ``timeout`` fails every key of its batch, and those waiting for the next, with
    StoreUnavailable.
    """

    def __init__(self, read_many: Callable[[list[str]], Awaitable[dict[str, T]]], timeout: float) -> None:
        self._read_many = read_many
        self._timeout = timeout
        self._waiting: dict[str, asyncio.Future[T | None]] = {}  # for the next query
        self._reading: dict[str, asyncio.Future[T | None]] = {}  # in the query out now
        self._task: asyncio.Task[None] | None = None
        self.queries = 0  # queries made (for tests and figures)

    async def get(self, key: str) -> T | None:
        future = self._reading.get(key) or self._waiting.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            future.add_done_callback(_retrieve)
            self._waiting[key] = future
            if self._task is None:
                self._task = asyncio.ensure_future(self._run())
        return await asyncio.shield(future)

    async def _run(self) -> None:
        try:
            while self._waiting:
                keys = list(self._waiting)[:MAX_BATCH]
                self._reading = {key: self._waiting.pop(key) for key in keys}
                self.queries += 1
                try:
                    # A timeout scope, not wait_for: no task of its own, so a read that needs
                    # no waiting (SQLite's) is done in this very step of the loop.
                    async with asyncio.timeout(self._timeout):
                        found = await self._read_many(keys)
                except (TimeoutError, StoreUnavailable) as exc:
                    error = StoreUnavailable(
                        str(exc) or f"the store did not answer within {self._timeout:g} s"
                    )
                    for future in (*self._reading.values(), *self._waiting.values()):
                        if not future.done():
                            future.set_exception(error)
                    self._waiting.clear()
                else:
                    for key, future in self._reading.items():
                        if not future.done():
                            future.set_result(found.get(key))
                self._reading = {}
        finally:
            self._task = None
