"""What the page's handlers are handed by the composition root: the API's context (the same
services, engine and lists as REST), plus the page's own sessions, sign-in limit and figures."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from s25rbl.api.context import ApiContext
from s25rbl.config import UiSettings
from s25rbl.ui.history import History
from s25rbl.ui.sessions import Sessions, SignInLimiter


@dataclass(frozen=True)
class UiContext:
    """The running node as the operator's page sees it."""

    api: ApiContext
    settings: UiSettings
    sessions: Sessions
    history: History
    limiter: SignInLimiter = field(default_factory=SignInLimiter)


UI = web.AppKey("ui", UiContext)


def ui_of(request: web.Request) -> UiContext:
    return request.app[UI]
