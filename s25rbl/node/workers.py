"""``[dns] workers = N``: N processes answering DNS on the same addresses (SO_REUSEPORT).

The kernel spreads UDP datagrams and TCP connections over the sockets bound to one port by
a hash of the client's address and port, so each worker serves a share of the clients. A
worker is a whole DNS node without the REST API: its own store connection and ``ListSync``
polling the store's version counter (a list change made anywhere reaches every worker
within one refresh interval, as it reaches every node of a cluster), its own reverse-lookup
and answer caches, its own entry-hit batches written to the store.

The primary (``s25rbl serve``) binds its listeners with ``reuse_port=True`` first, so a
configured port 0 becomes a real one, then starts the N - 1 others with ``WorkerPool``:
fresh interpreters (``spawn``: no event loop, thread or socket inherited), each running the
composition root's worker entry point (``s25rbl.app.dns_worker``) on the primary's bound
addresses. Each worker holds its own copy of the
lists and caches: memory grows with N.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import multiprocessing.context
from collections.abc import Callable
from multiprocessing.connection import Connection

from s25rbl.config import Endpoint, Settings
from s25rbl.node.counters import WorkerCounters

log = logging.getLogger(__name__)


WorkerMain = Callable[[Settings, int, Connection], None]  # (settings, number, counters pipe)


class WorkerPool:
    """The N - 1 worker processes of a primary, on the addresses the primary bound.

    ``target`` is the body of each worker process (importable at module level: ``spawn``
    pickles it by name).
    """

    def __init__(self, settings: Settings, bound: list[Endpoint], count: int, target: WorkerMain) -> None:
        dns = dataclasses.replace(settings.dns, listen=tuple(bound))  # port 0 resolved already
        self._settings = dataclasses.replace(settings, dns=dns)
        self._count = count
        self._target = target
        self._context = multiprocessing.get_context("spawn")
        self._procs: dict[int, multiprocessing.context.SpawnProcess] = {}
        self.counters = WorkerCounters()
        self._spawns = 0

    def start(self) -> None:
        self.counters.start()
        for number in range(1, self._count):
            self._spawn(number)

    def _spawn(self, number: int) -> None:
        self._spawns += 1
        report = self.counters.open(self._spawns)
        proc = self._context.Process(
            target=self._target,
            args=(self._settings, number, report),
            name=f"s25rbl-dns-{number}",
            daemon=True,
        )
        proc.start()
        report.close()  # the worker has its own copy; ours would hide the end-of-file at its exit
        self._procs[number] = proc

    def respawn_dead(self) -> int:
        """Start again every worker that exited; how many were. Call it periodically."""
        dead = [n for n, p in self._procs.items() if not p.is_alive()]
        for number in dead:
            log.warning(
                "dns worker %d exited with %s; starting it again", number, self._procs[number].exitcode
            )
            self._spawn(number)
        return len(dead)

    def stop(self, timeout: float = 10.0) -> None:
        for proc in self._procs.values():
            if proc.is_alive():
                proc.terminate()  # SIGTERM: the worker stops its listeners and flushes hits
        for proc in self._procs.values():
            proc.join(timeout)
            if proc.is_alive():
                proc.kill()
                proc.join()
        self._procs.clear()
        self.counters.stop()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs.values() if p.pid is not None]
