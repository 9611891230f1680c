"""Signing in with an API token and out again.

The token travels once, in a POST body; it is never put in a URL, a cookie or a log line. The
sign-in form carries a value that must match a cookie set with it (so another site cannot
sign a browser in with a token of its choosing), and failed attempts are limited per address.
"""

from __future__ import annotations

import hmac
import logging
import math
import secrets

from aiohttp import web

from s25rbl.ui.base import (
    HOME,
    SESSION,
    SESSION_COOKIE,
    SIGNIN_COOKIE,
    action,
    client_of,
    public,
    redirect,
    render,
    safe_return,
    session_of,
    set_cookie,
)
from s25rbl.ui.context import ui_of

log = logging.getLogger(__name__)

SIGNIN_FORM_SECONDS = 3600


def _signin_page(request: web.Request, status: int = 200, error: str = "", notice: str = "") -> web.Response:
    nonce = secrets.token_urlsafe(24)
    nxt = safe_return(request.query.get("next") or "", HOME)
    response = render(
        request, "signin.html", status=status, nonce=nonce, next=nxt, error=error, notice=notice
    )
    set_cookie(request, response, SIGNIN_COOKIE, nonce, SIGNIN_FORM_SECONDS)
    return response


@public
async def signin_form(request: web.Request) -> web.StreamResponse:
    if request.get(SESSION) is not None:
        return redirect(safe_return(request.query.get("next") or "", HOME))
    notice = "You signed out." if request.query.get("bye") == "1" else ""
    return _signin_page(request, notice=notice)


@public
async def signin(request: web.Request) -> web.StreamResponse:
    ui = ui_of(request)
    form = await request.post()
    address, _ = client_of(request, ui.settings.trusted_proxies)
    nonce = form.get("nonce")
    cookie = request.cookies.get(SIGNIN_COOKIE, "")
    if not isinstance(nonce, str) or not cookie or not hmac.compare_digest(nonce.encode(), cookie.encode()):
        return _signin_page(
            request, 403, "The sign-in form was out of date; it has been reloaded: try again."
        )
    wait = ui.limiter.retry_after(address)
    if wait > 0:
        response = _signin_page(
            request,
            429,
            f"Too many failed sign-ins from your address: wait {math.ceil(wait)} s and try again.",
        )
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response
    raw = form.get("token")
    token = raw.strip() if isinstance(raw, str) and len(raw) <= 200 else ""
    principal = await ui.api.tokens.principal(token) if token else None
    if principal is None:
        ui.limiter.failed(address)
        log.warning("operator's page: failed sign-in from %s", address)  # never the token itself
        return _signin_page(request, 401, "Unknown or revoked token.")
    if "read" not in principal.granted:
        return _signin_page(
            request, 403, f"Token {principal.name!r} has no read scope: it cannot use this page."
        )
    ui.limiter.succeeded(address)
    previous = request.get(SESSION)
    if previous is not None:
        ui.sessions.end(previous)  # one browser, one session: the old cookie is worth nothing now
    cookie_value, _ = ui.sessions.create(token, principal.name)
    log.info("operator's page: %s signed in from %s", principal.actor, address)
    response = redirect(safe_return(form.get("next"), HOME))
    set_cookie(request, response, SESSION_COOKIE, cookie_value, int(ui.settings.session_lifetime))
    response.del_cookie(SIGNIN_COOKIE, path=HOME)
    return response


@action("read")
async def signout(request: web.Request) -> web.StreamResponse:
    ui = ui_of(request)
    ui.sessions.end(session_of(request))
    response = redirect(f"{HOME}signin?bye=1")
    response.del_cookie(SESSION_COOKIE, path=HOME)
    return response


@public
async def home(request: web.Request) -> web.StreamResponse:
    return redirect(f"{HOME}review" if request.get(SESSION) is not None else f"{HOME}signin")


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/", home)
    r.add_get("/signin", signin_form)
    r.add_post("/signin", signin)
    r.add_post("/signout", signout)
