"""The REST API as one aiohttp application: middlewares, routes, and the open endpoints
(``/``, ``/healthz``, ``/readyz``, ``/metrics``, ``/v1/openapi.yaml``)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from s25rbl.api import entries, index, learning, observe, policy
from s25rbl.api.auth import FailedLogins, auth_middleware
from s25rbl.api.context import CONTEXT, ApiContext, context_of
from s25rbl.api.guard import Gate, guard_middleware
from s25rbl.api.metrics import metrics_middleware
from s25rbl.api.problems import problems_middleware


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def readyz(request: web.Request) -> web.Response:
    lists = context_of(request).lists
    ready = lists.loaded and lists.healthy
    body = {"ready": ready, "lists_loaded": lists.loaded, "store": lists.healthy}
    return web.json_response(body, status=200 if ready else 503)


async def metrics_endpoint(request: web.Request) -> web.Response:
    body = generate_latest(context_of(request).metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def setup_routes(app: web.Application) -> None:
    """Every route of the API (``openapi.yaml`` describes exactly these)."""
    app.router.add_get("/", index.index)  # leads to the operator's page when it is on
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_endpoint)
    observe.setup(app)
    entries.setup(app)
    learning.setup(app)
    policy.setup(app)


def create_api(context: ApiContext) -> web.Application:
    api = context.settings.api
    failures = FailedLogins(context.services.audit)
    app = web.Application(
        middlewares=[
            metrics_middleware(context.metrics),
            problems_middleware,
            guard_middleware(Gate(api.max_concurrent), api.max_body),
            auth_middleware(context.tokens, api.metrics_public, failures),
        ],
        client_max_size=api.max_body,
    )
    app[CONTEXT] = context

    async def close_failures(_app: web.Application) -> None:
        await failures.close()

    app.on_cleanup.append(close_failures)
    setup_routes(app)
    return app
