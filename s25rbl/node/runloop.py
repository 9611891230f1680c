"""Running a coroutine on the event loop every s25rbl process uses, and settling the garbage
collector once a node is up."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed (the ``fast`` extra): same behaviour, less CPU per
    packet; on asyncio's own loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


GC_YOUNG = 10_000  # net allocations between young collections (Python's default: 700)


def settle_collector() -> None:
    """Once the node is up: what start-up built (modules, the schema, lists, compiled
    statements) is set aside from garbage collection (``gc.freeze``), so no full collection
    walks it again, a pause of 0.1-0.2 s with every answer waiting; young collections run every
    GC_YOUNG allocations instead of every 700 (a request's objects are nearly all freed by
    reference counting, so each young collection stays short, and there are far fewer)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG, middle, old)
