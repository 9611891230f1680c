"""The operator's page (product §8): server-rendered HTML under ``/ui/`` of the API's address,
signed in with an API token whose scopes apply; every change through the same services as
REST and the CLI. Templates and static files ship inside the package: nothing is fetched."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from s25rbl.ui import audit, auth, explain, figures, lists, policy, review
from s25rbl.ui.base import ui_middleware
from s25rbl.ui.context import UI, UiContext

STATIC_DIR = Path(__file__).resolve().parent / "static"


def _when(value: object) -> str:
    """A stored time as the page shows it: UTC, to the second."""
    strftime = getattr(value, "strftime", None)
    return strftime("%Y-%m-%d %H:%M:%S") + "Z" if strftime is not None else ""


def create_ui(context: UiContext) -> web.Application:
    """The page as an aiohttp application, mounted under ``/ui/`` by the composition root."""
    app = web.Application(middlewares=[ui_middleware])
    app[UI] = context
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("s25rbl.ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    for module in (auth, review, policy, explain, lists, figures, audit):
        module.setup(app)
    app.router.add_static("/static/", STATIC_DIR, name="static")

    async def sampler(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(context.history.run(), name="ui-figures")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(sampler)
    return app


def mount_ui(api: web.Application, context: UiContext) -> None:
    """Serve the page under ``/ui/`` of the API's application (whose ``GET /`` leads there)."""
    api.add_subapp("/ui/", create_ui(context))
