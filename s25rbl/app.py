"""The composition root: the only module that knows every part and how they are wired.

``serve`` runs one aiohttp application; the long-lived parts (store, list sync, resolver, DNS
listeners) are its cleanup contexts, so they start and stop together, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from s25rbl.api import learning_routes, routes
from s25rbl.api.auth import TokenCache, auth_middleware
from s25rbl.api.metrics import METRICS, Metrics, metrics_middleware
from s25rbl.api.problems import problems_middleware
from s25rbl.clock import Clock, SystemClock
from s25rbl.config import Endpoint, Settings
from s25rbl.counters import LatencyHistogram
from s25rbl.dns.handler import Responder
from s25rbl.dns.transport import Listeners
from s25rbl.errors import StoreUnavailable
from s25rbl.jobs import ExpiryScheduler
from s25rbl.learning.ingest import Learner
from s25rbl.listsync import ListSync
from s25rbl.resolve.client import StubResolver
from s25rbl.resolve.rdns import ReverseLookup
from s25rbl.service import load_builtin_whitelist
from s25rbl.store.db import Store, migrate
from s25rbl.verdict.lists import ListIndex
from s25rbl.verdict.pipeline import VerdictEngine
from s25rbl.workers import WorkerPool, make_responder

log = logging.getLogger(__name__)


@dataclass
class Parts:
    """Everything a running node holds; filled in as the contexts start."""

    settings: Settings
    clock: Clock
    store: Store | None = None
    lists: ListSync | None = None
    rdns: ReverseLookup | None = None
    engine: VerdictEngine | None = None
    responder: Responder | None = None
    listeners: Listeners | None = None
    tokens: TokenCache | None = None
    learner: Learner | None = None
    workers: WorkerPool | None = None
    expiry: ExpiryScheduler | None = None
    metrics: Metrics | None = None
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


PARTS = web.AppKey("parts", Parts)


def build_engine(
    settings: Settings,
    lists: Callable[[], ListIndex],
    clock: Clock,
    observe: Callable[[float, str], None] | None = None,
) -> tuple[ReverseLookup, VerdictEngine]:
    # Each lookup gets half the verdict deadline, so the forward lookups still have time after
    # a slow PTR lookup, and the stub's second try (next upstream) happens within the deadline.
    resolver = StubResolver(
        [(e.host, e.port) for e in settings.resolver.upstreams],
        timeout=settings.resolver.timeout / 2,
        negative_ttl=settings.dns.negative_ttl,
    )
    rdns = ReverseLookup(
        resolver,
        deadline=settings.resolver.timeout,
        max_names=settings.resolver.max_names,
        max_inflight=settings.resolver.max_inflight,
        cache_size=settings.resolver.cache_size,
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


async def open_store(settings: Settings, clock: Clock) -> Store:
    """The store, migrated, with the starter whitelist on first use: whichever command opens a
    new store first (``serve`` or the CLI) sets it up the same way."""
    # Alembic runs its own event loop for the async engine, so it gets a thread.
    await asyncio.to_thread(migrate, settings.database.url)
    store = Store(settings.database.url)
    try:
        if settings.lists.builtin_whitelist:
            await load_builtin_whitelist(store, clock=clock)
    except BaseException:
        await store.close()
        raise
    return store


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    parts = app[PARTS]
    settings = parts.settings
    parts.store = await open_store(settings, parts.clock)
    parts.tokens = TokenCache(parts.store, parts.clock)
    parts.learner = Learner(settings.learning, parts.clock)
    parts.lists = ListSync(
        parts.store,
        parts.clock,
        settings.lists.refresh_interval,
        learned_lifetime=timedelta(seconds=settings.learning.lifetime),
    )
    await parts.lists.reload()
    yield
    await parts.store.close()


async def _dns_ctx(app: web.Application) -> AsyncIterator[None]:
    parts = app[PARTS]
    settings = parts.settings
    assert parts.lists is not None and parts.store is not None
    lists = parts.lists
    parts.rdns, parts.engine = build_engine(settings, lists.current, parts.clock, parts.latency.observe)
    parts.responder = make_responder(
        settings, parts.engine, lambda: max(1, lists.index.version), settings.dns.answer_cache_size
    )
    parts.listeners = Listeners(parts.responder, settings.dns.listen, settings.dns.tcp_idle_timeout)
    many = settings.dns.workers > 1
    await parts.listeners.start(reuse_port=many)
    if many:
        # The primary binds first (so a port 0 is resolved), then starts the other workers.
        parts.workers = WorkerPool(
            settings, parts.listeners.bound, settings.dns.workers, settings.dns.answer_cache_size
        )
        parts.workers.start()
        parts.tasks.append(asyncio.create_task(_watch_workers(parts.workers), name="workers"))
    parts.tasks.append(asyncio.create_task(lists.run(), name="list-sync"))
    parts.tasks.append(asyncio.create_task(lists.run_hits(parts.engine.hits), name="hit-flush"))
    on_removed = parts.metrics.count_expired if parts.metrics is not None else None
    parts.expiry = ExpiryScheduler(parts.store, parts.clock, settings.learning, on_removed)
    parts.expiry.start()
    yield
    parts.expiry.stop()
    for task in parts.tasks:
        task.cancel()
    for task in parts.tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await parts.listeners.stop()
    await lists.flush_hits(parts.engine.hits)
    await parts.rdns.close()
    if parts.workers is not None:
        await asyncio.to_thread(parts.workers.stop)


async def _watch_workers(pool: WorkerPool) -> None:
    while True:
        await asyncio.sleep(5)
        pool.respawn_dead()


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    lists = request.app[PARTS].lists
    ready = lists is not None and lists.loaded and lists.healthy
    body = {
        "ready": ready,
        "lists_loaded": bool(lists and lists.loaded),
        "store": bool(lists and lists.healthy),
    }
    return web.json_response(body, status=200 if ready else 503)


async def metrics_endpoint(request: web.Request) -> web.Response:
    metrics = request.app[PARTS].metrics
    assert metrics is not None
    body = generate_latest(metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def create_app(settings: Settings, clock: Clock | None = None) -> web.Application:
    parts = Parts(settings=settings, clock=clock or SystemClock())
    parts.metrics = Metrics(lambda: parts)

    def tokens() -> TokenCache:
        if parts.tokens is None:
            raise StoreUnavailable("the store is not open yet")
        return parts.tokens

    app = web.Application(
        middlewares=[
            metrics_middleware,
            problems_middleware,
            auth_middleware(tokens, lambda: settings.api.metrics_public),
        ],
        client_max_size=settings.api.max_body,
    )
    app[PARTS] = parts
    app[METRICS] = parts.metrics
    app.cleanup_ctx.append(_store_ctx)
    app.cleanup_ctx.append(_dns_ctx)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    routes.setup(app)
    learning_routes.setup(app)
    return app


async def run(settings: Settings, ready: Callable[[list[Endpoint], Endpoint], None] | None = None) -> None:
    """Serve until SIGTERM or SIGINT; ``ready`` is told the addresses actually bound."""
    # Signals first: a SIGTERM that arrives while starting still stops cleanly.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    try:
        await runner.setup()
        api = settings.api.listen
        site = web.TCPSite(runner, api.host, api.port, reuse_address=True)
        await site.start()
        bound = runner.addresses
        api_port = int(bound[0][1]) if bound else api.port
        parts = app[PARTS]
        assert parts.listeners is not None
        if ready is not None and not stop.is_set():
            ready(list(parts.listeners.bound), Endpoint(api.host, api_port))
        await stop.wait()
        log.info("stopping")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
