"""``[dns] workers = N``: N processes answering DNS on the same addresses (SO_REUSEPORT).

The kernel spreads UDP datagrams and TCP connections over the sockets bound to one port by
a hash of the client's address and port, so each worker serves a share of the clients. A
worker is a whole DNS node without the REST API: its own store connection and ``ListSync``
polling the store's version counter (a list change made anywhere reaches every worker
within one refresh interval, as it reaches every node of a cluster), its own reverse-lookup
and answer caches, its own entry-hit batches written to the store.

The primary (``s25rbl serve``) binds its listeners with ``reuse_port=True`` first, so a
configured port 0 becomes a real one, then starts the N - 1 others with ``WorkerPool``:
fresh interpreters (``spawn``: no event loop, thread or socket inherited), each running
``worker_main`` on the primary's bound addresses. Each worker holds its own copy of the
lists and caches: memory grows with N.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import multiprocessing.context
import signal
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from s25rbl.config import Endpoint, Settings
from s25rbl.counters import REPORT_INTERVAL, LatencyHistogram, WorkerCounters, take
from s25rbl.dns.handler import DEFAULT_CACHE_SIZE, AnswerSettings, Responder
from s25rbl.dns.transport import Listeners
from s25rbl.dns.zones import ZoneKind, ZoneTable
from s25rbl.runloop import run_loop
from s25rbl.verdict.pipeline import VerdictEngine

log = logging.getLogger(__name__)


def make_responder(
    settings: Settings,
    engine: VerdictEngine,
    serial: Callable[[], int],
    cache_size: int = DEFAULT_CACHE_SIZE,
) -> Responder:
    """The responder a node's settings describe (the same for the primary and every worker)."""
    dns = settings.dns
    zones = ZoneTable(
        [(dns.zone, ZoneKind.BLOCKLIST), (dns.whitelist_zone, ZoneKind.WHITELIST)]
        + ([(dns.hostname_zone, ZoneKind.HOSTNAME)] if dns.hostname_zone else [])
    )
    answers = AnswerSettings(
        ttl=dns.ttl,
        negative_ttl=dns.negative_ttl,
        tempfail_ttl=dns.tempfail_ttl,
        nameservers=dns.nameservers,
        hostmaster=dns.hostmaster,
        max_udp_payload=dns.max_udp_payload,
    )
    return Responder(zones, engine, answers, serial=serial, cache_size=cache_size)


async def serve_dns(
    settings: Settings,
    *,
    cache_size: int = DEFAULT_CACHE_SIZE,
    ready: Callable[[list[Endpoint]], None] | None = None,
    stop: asyncio.Event | None = None,
    report: Any = None,
) -> None:
    """One DNS-only node on ``settings.dns.listen`` (SO_REUSEPORT), until ``stop`` or SIGTERM.

    The store must exist and be migrated already (the primary does that before any worker
    starts). ``report``, the sending end of a pipe to the primary, gets this process's
    counters (a ``Snapshot``) every REPORT_INTERVAL and once more when it stops.
    """
    from s25rbl.app import build_engine  # the composition root's wiring, shared
    from s25rbl.clock import SystemClock
    from s25rbl.listsync import ListSync
    from s25rbl.store.db import Store

    clock = SystemClock()
    store = Store(settings.database.url)
    lifetime = timedelta(seconds=settings.learning.lifetime)
    lists = ListSync(store, clock, settings.lists.refresh_interval, learned_lifetime=lifetime)
    rdns = None
    latency = LatencyHistogram()
    try:
        await lists.reload()
        rdns, engine = build_engine(settings, lists.current, clock, latency.observe)
        responder = make_responder(settings, engine, lambda: max(1, lists.index.version), cache_size)

        def send_counters() -> None:
            if report is None:
                return
            try:
                report.send(take(responder, rdns, latency))
            except OSError as exc:  # the primary is gone: nobody to report to
                log.debug("counters not sent: %s", exc)

        async def report_counters() -> None:
            while True:
                await asyncio.sleep(REPORT_INTERVAL)
                # A thread: should the primary ever stop reading, a full pipe blocks it, not DNS.
                await asyncio.to_thread(send_counters)

        listeners = Listeners(responder, settings.dns.listen, settings.dns.tcp_idle_timeout)
        await listeners.start(reuse_port=True)
        tasks = [
            asyncio.create_task(lists.run(), name="list-sync"),
            asyncio.create_task(lists.run_hits(engine.hits), name="hit-flush"),
            asyncio.create_task(report_counters(), name="counters"),
        ]
        if ready is not None:
            ready(list(listeners.bound))
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await listeners.stop()
            send_counters()
            await lists.flush_hits(engine.hits)
    finally:
        if rdns is not None:
            await rdns.close()
        await store.close()


def worker_main(
    settings: Settings, number: int, cache_size: int = DEFAULT_CACHE_SIZE, report: Any = None
) -> None:
    """The body of worker process ``number`` (1 .. N-1; the primary is 0)."""
    logging.basicConfig(
        level=settings.log.level.upper(),
        format=f"%(asctime)s s25rbl[dns-{number}] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    run_loop(serve_dns(settings, cache_size=cache_size, report=report))


class WorkerPool:
    """The N - 1 worker processes of a primary, on the addresses the primary bound."""

    def __init__(
        self, settings: Settings, bound: list[Endpoint], count: int, cache_size: int = DEFAULT_CACHE_SIZE
    ) -> None:
        dns = dataclasses.replace(settings.dns, listen=tuple(bound))  # port 0 resolved already
        self._settings = dataclasses.replace(settings, dns=dns)
        self._count = count
        self._cache_size = cache_size
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
            target=worker_main,
            args=(self._settings, number, self._cache_size, report),
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


def main(argv: list[str] | None = None) -> int:
    """``python -m s25rbl.workers --config FILE``: one DNS-only worker (benchmarks, or
    a supervisor running workers itself); the port must be fixed in the configuration."""
    import argparse

    from s25rbl.config import load_settings

    parser = argparse.ArgumentParser(prog="python -m s25rbl.workers", description=main.__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--number", type=int, default=0)
    parser.add_argument("--answer-cache", type=int, default=DEFAULT_CACHE_SIZE)
    args = parser.parse_args(argv)
    settings = load_settings(args.config)

    def ready(bound: list[Endpoint]) -> None:
        print(f"dns worker {args.number} serving DNS on {', '.join(map(str, bound))}", flush=True)

    logging.basicConfig(level=settings.log.level.upper(), stream=sys.stderr)
    run_loop(serve_dns(settings, cache_size=args.answer_cache, ready=ready))
    return 0


if __name__ == "__main__":
    sys.exit(main())
