"""The composition root: the only module that knows every part and how they are wired.

A DNS node is built once (``dns_node``): the store, the lists kept in step with it, reverse lookups,
the verdict engine and the DNS responder. ``serve`` answers with it and adds the rest of a full node
(extra DNS workers, the expiry job, the REST API); an extra DNS worker (``dns_worker``) and ``serve
--dns-only`` build the same node and answer DNS only. Parts meet through what they are handed here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from multiprocessing.connection import Connection

from aiohttp import web

from s25rbl.api.app import create_api
from s25rbl.api.auth import TokenCache
from s25rbl.api.context import ApiContext
from s25rbl.api.guard import HttpServerLog
from s25rbl.api.metrics import Metrics
from s25rbl.clock import Clock, SystemClock
from s25rbl.config import Endpoint, Settings, default_state_dir
from s25rbl.dns.answers import AnswerSettings
from s25rbl.dns.handler import Responder
from s25rbl.dns.tcp import TcpLimits
from s25rbl.dns.transport import Listeners
from s25rbl.dns.zones import ZoneKind, ZoneTable
from s25rbl.errors import ListenError
from s25rbl.jobs.expiry import ExpiryScheduler
from s25rbl.learning.ingest import MAX_BATCH, Learner
from s25rbl.learning.judge import EngineJudge
from s25rbl.learning.limits import ReportLimits
from s25rbl.lists.domains import load_public_suffixes
from s25rbl.node.counters import REPORT_INTERVAL, LatencyHistogram, Snapshot, take, total
from s25rbl.node.runloop import run_loop, settle_collector
from s25rbl.node.sync import ListSync
from s25rbl.node.workers import WorkerPool
from s25rbl.policy.node import PolicyNode
from s25rbl.resolve.client import StubResolver
from s25rbl.resolve.rdns import ReverseLookup
from s25rbl.service import Services
from s25rbl.service.starter import offer_starter
from s25rbl.store.db import Store, migrate, require_schema, sqlite_path
from s25rbl.ui import mount_ui
from s25rbl.ui.context import UiContext
from s25rbl.ui.history import History, policy_counters, snapshot_counters
from s25rbl.ui.sessions import Sessions
from s25rbl.verdict.lists import ListIndex
from s25rbl.verdict.pipeline import VerdictEngine

log = logging.getLogger(__name__)

# DNS addresses bound; the API's and the policy service's, if any.
Ready = Callable[[list[Endpoint], Endpoint | None, Endpoint | None], None]


def build_engine(
    settings: Settings,
    lists: Callable[[], ListIndex],
    clock: Clock,
    observe: Callable[[float, str], None] | None = None,
) -> tuple[ReverseLookup, VerdictEngine]:
    """Reverse lookups through the configured upstreams, and the verdict engine on ``lists``."""
    # Each lookup gets half the verdict deadline, so the forward lookups still have time after
    # a slow PTR lookup, and the stub's second try (next upstream) happens within the deadline.
    resolver = StubResolver(
        [(e.host, e.port) for e in settings.resolver.upstreams],
        timeout=settings.resolver.timeout / 2,
        negative_ttl=settings.dns.negative_ttl,
        # What the verdicts in flight can need at once (a PTR, then a name each), at least.
        max_lookups=max(8192, settings.resolver.max_inflight * (settings.resolver.max_names + 1)),
    )
    rdns = ReverseLookup(
        resolver,
        deadline=settings.resolver.timeout,
        max_names=settings.resolver.max_names,
        max_inflight=settings.resolver.max_inflight,
        cache_size=settings.resolver.cache_size,
        cache_bytes=settings.resolver.cache_bytes,
        clock=clock,
        observe=observe,
    )
    engine = VerdictEngine(
        lists,
        rdns,
        tempfail_ttl=settings.dns.tempfail_ttl,
        ip_literal_names=settings.dns.ip_literal_names,
        clock=clock,
    )
    return rdns, engine


def make_responder(settings: Settings, engine: VerdictEngine, serial: Callable[[], int]) -> Responder:
    """The responder a node's settings describe (the same in every process of the node)."""
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
    return Responder(
        zones,
        engine,
        answers,
        serial=serial,
        cache_size=dns.answer_cache_size,
        cache_bytes=dns.answer_cache_bytes,
    )


def store_connections(settings: Settings) -> int:
    """The pool's bound: a connection for each API request at work (``api.max_concurrent``) and
    some for the node's own work (list sync, hit counts, expiry), so neither starves the other."""
    return settings.api.max_concurrent + 7


def in_default_folder(url: str) -> bool:
    """Whether ``url`` is a SQLite file in the default state directory, the one folder s25rbl
    creates itself (any other must exist: a mistyped path is an error, not a new store)."""
    path = sqlite_path(url)
    return path is not None and path.parent == default_state_dir(os.environ)


async def open_store(settings: Settings, clock: Clock, *, create: bool = False) -> Store:
    """The store, migrated, with the starter whitelist entries it was never offered (all of them
    on first use, a new release's on upgrade): whichever command opens the store first after an
    install or an upgrade (``serve``, ``migrate`` or another CLI command) sets it up the same way.
    Only with ``create`` (``serve``, ``migrate``) may there be no store yet: otherwise a missing
    SQLite file or an empty database is refused (StoreMissing) rather than set up."""
    url = settings.database.url
    # Alembic runs its own event loop for the async engine, so it gets a thread.
    if not create:
        await asyncio.to_thread(require_schema, url)
    await asyncio.to_thread(partial(migrate, url, create_folder=create and in_default_folder(url)))
    store = Store(settings.database.url, connections=store_connections(settings))
    try:
        if settings.lists.builtin_whitelist:
            await offer_starter(store, clock)
    except BaseException:
        await store.close()
        raise
    return store


@dataclass(frozen=True)
class DnsNode:
    """What every DNS-answering process of a node holds."""

    settings: Settings
    clock: Clock
    store: Store
    lists: ListSync
    rdns: ReverseLookup
    engine: VerdictEngine
    responder: Responder
    latency: LatencyHistogram
    listening: list[Listeners] = field(default_factory=list)  # what ``answering`` started

    def counters(self) -> Snapshot:
        """This process's DNS counters now, its listeners' included."""
        return take(self.responder, self.rdns, self.latency, self.listening)


@contextlib.asynccontextmanager
async def dns_node(settings: Settings, clock: Clock, *, set_up_store: bool) -> AsyncIterator[DnsNode]:
    """Build a node on the store with its lists loaded. ``set_up_store``: migrate it and load
    the starter whitelist first (the primary); extra workers find it set up already."""
    if set_up_store:
        store = await open_store(settings, clock, create=True)
    else:
        store = Store(settings.database.url, connections=store_connections(settings))
    rdns: ReverseLookup | None = None
    try:
        lifetime = timedelta(seconds=settings.learning.lifetime)
        lists = ListSync(store, clock, settings.lists.refresh_interval, learned_lifetime=lifetime)
        await lists.reload()
        latency = LatencyHistogram()
        rdns, engine = build_engine(settings, lists.current, clock, latency.observe)
        responder = make_responder(settings, engine, lambda: max(1, lists.index.version))
        yield DnsNode(settings, clock, store, lists, rdns, engine, responder, latency)
    finally:
        if rdns is not None:
            await rdns.close()
        await store.close()


@contextlib.asynccontextmanager
async def answering(node: DnsNode, *, reuse_port: bool) -> AsyncIterator[Listeners]:
    """The node's DNS listeners, with its lists kept in step and its hit counts written back."""
    dns = node.settings.dns
    tcp = TcpLimits(dns.tcp_idle_timeout, dns.tcp_max_connections, dns.tcp_max_per_prefix)
    udp = (dns.udp_receive_buffer, dns.udp_batch, dns.fast_path)
    listeners = Listeners(node.responder, dns.listen, tcp, *udp)
    await listeners.start(reuse_port=reuse_port)
    node.listening.append(listeners)  # counted in node.counters(), stopped or not
    tasks = [
        asyncio.create_task(node.lists.run(), name="list-sync"),
        asyncio.create_task(node.lists.run_hits(node.engine.hits), name="hit-flush"),
    ]
    try:
        yield listeners
    finally:
        await _cancel(tasks)
        await listeners.stop()
        await node.lists.flush_hits(node.engine.hits)


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def serve(settings: Settings, ready: Ready | None = None, clock: Clock | None = None) -> None:
    """A full node until SIGTERM or SIGINT: DNS and its workers, policy, expiry, the REST API."""
    clock = clock or SystemClock()
    stop = asyncio.Event()
    # Signals first: a SIGTERM that arrives while starting still stops cleanly.
    with _stop_on_signals(stop):
        many = settings.dns.workers > 1
        async with (
            dns_node(settings, clock, set_up_store=True) as node,
            answering(node, reuse_port=many) as listeners,
        ):
            pool: WorkerPool | None = None
            tasks: list[asyncio.Task[None]] = []
            if many:
                # The primary bound first (so a port 0 is resolved); the others join it.
                pool = WorkerPool(settings, listeners.bound, settings.dns.workers, dns_worker)
                pool.start()
                tasks.append(asyncio.create_task(_watch_workers(pool), name="workers"))
            workers = pool

            def counters() -> Snapshot:
                own = node.counters()
                return own if workers is None else total([own, *workers.counters.snapshots()])

            services = Services(
                node.store,
                clock,
                settings.learning,
                changed=node.lists.reload,
                learner=node_learner(node),
                policy_settings=settings.policy,
            )
            await asyncio.to_thread(load_public_suffixes)  # pools need it: not on the event loop
            policy: PolicyNode | None = None
            if settings.policy.listen is not None:  # same engine, lists, caches and store as DNS
                refresh = settings.lists.refresh_interval
                policy = PolicyNode(
                    settings.policy, node.engine, services.policy, clock, refresh_interval=refresh
                )
            metrics = Metrics(counters, node.lists, policy)
            expiry = ExpiryScheduler(
                node.store, clock, settings.learning, metrics.count_expired, policy=settings.policy
            )
            expiry.start()
            context = ApiContext(
                settings,
                services,
                node.engine,
                node.lists,
                counters,
                metrics,
                TokenCache(services.tokens),
                policy,
            )
            api_app = create_api(context)
            if settings.ui.enabled:
                mount_ui(api_app, operators_page(settings, context, counters))
            runner = web.AppRunner(api_app, handle_signals=False, access_log=None, logger=HttpServerLog())
            try:
                policy_bound = await policy.start() if policy is not None else None
                await runner.setup()
                api = settings.api.listen
                try:
                    await web.TCPSite(runner, api.host, api.port, reuse_address=True).start()
                except OSError as exc:
                    raise ListenError("REST API", api.host, api.port, exc) from None
                bound = runner.addresses
                api_port = int(bound[0][1]) if bound else api.port
                settle_collector()
                if ready is not None and not stop.is_set():
                    ready(list(listeners.bound), Endpoint(api.host, api_port), policy_bound)
                await stop.wait()
                log.info("stopping")
            finally:
                expiry.stop()
                await _cancel(tasks)
                await runner.cleanup()
                if policy is not None:
                    await policy.stop()
                if pool is not None:
                    await asyncio.to_thread(pool.stop)


def operators_page(settings: Settings, api: ApiContext, counters: Callable[[], Snapshot]) -> UiContext:
    """The operator's page of a full node: its sessions, and its figures from the node's counters."""
    ui = settings.ui
    history = History([lambda: snapshot_counters(counters())], size=ui.history, interval=ui.sample_interval)
    policy = api.policy
    if policy is not None:  # the tarpits' and greylists' charts
        history.add_source(lambda: policy_counters(policy.counters))
    return UiContext(api, ui, Sessions(ui.session_idle, ui.session_lifetime), history)


def node_learner(node: DnsNode) -> Learner:
    """Learning as the node does it: reported addresses judged by its own verdict engine (the
    DNS answers' lists and caches), reports limited per reporter and per address."""
    learning = node.settings.learning
    limits = ReportLimits(
        learning.reports_per_minute,
        learning.address_reports_per_minute,
        max_batch=MAX_BATCH,
        clock=node.clock,
    )
    return Learner(learning, node.clock, judge=EngineJudge(node.engine), limits=limits)


async def _watch_workers(pool: WorkerPool) -> None:
    while True:
        await asyncio.sleep(5)
        pool.respawn_dead()


async def serve_dns_only(
    settings: Settings, *, ready: Ready | None = None, report: Connection | None = None
) -> None:
    """A DNS-only node on ``settings.dns.listen`` (SO_REUSEPORT) until SIGTERM or SIGINT, on the
    store the primary set up. ``report``, the sending end of a pipe to the primary, gets this
    process's counters every REPORT_INTERVAL and once more when it stops."""
    stop = asyncio.Event()
    with _stop_on_signals(stop):
        async with dns_node(settings, SystemClock(), set_up_store=False) as node:

            def send_counters() -> None:
                if report is None:
                    return
                try:
                    report.send(node.counters())
                except OSError as exc:  # the primary is gone: nobody to report to
                    log.debug("counters not sent: %s", exc)

            async def report_counters() -> None:
                while True:
                    await asyncio.sleep(REPORT_INTERVAL)
                    # A thread: should the primary stop reading, a full pipe blocks it, not DNS.
                    await asyncio.to_thread(send_counters)

            async with answering(node, reuse_port=True) as listeners:
                task = asyncio.create_task(report_counters(), name="counters")
                try:
                    if ready is not None:
                        ready(list(listeners.bound), None, None)
                    await stop.wait()
                finally:
                    await _cancel([task])
            send_counters()  # the last word, after the listeners stopped


def dns_worker(settings: Settings, number: int, report: Connection) -> None:
    """The body of extra DNS worker process ``number`` (1 .. N-1; the primary is 0)."""
    logging.basicConfig(
        level=settings.log.level.upper(),
        format=f"%(asctime)s s25rbl[dns-{number}] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    run_loop(serve_dns_only(settings, report=report))
