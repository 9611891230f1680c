"""The page's request handling: who is signed in and what their token's scopes let them do, a
CSRF token on every write, security headers on every answer, errors shown as pages; and the
helpers the handlers share (rendering, redirects, form fields, paging)."""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp_jinja2
from aiohttp import web

from s25rbl.errors import DuplicateEntry, EntryNotFound, InvalidEntry, ListFileError, StoreUnavailable
from s25rbl.service.tokens import Principal
from s25rbl.ui.context import ui_of
from s25rbl.ui.sessions import Session

log = logging.getLogger(__name__)

SESSION_COOKIE = "s25rbl_session"
SIGNIN_COOKIE = "s25rbl_signin"
HOME = "/ui/"
STATIC = "/ui/static/"
SESSION = web.RequestKey("ui_session", Session)
PRINCIPAL = web.RequestKey("ui_principal", Principal)
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
NAV = (
    ("review", "Review", "read"),
    ("explain", "Explain", "read"),
    ("lists", "Lists", "read"),
    ("figures", "Figures", "read"),
    ("audit", "Audit", "admin"),
)


def view(scope: str = "read") -> Callable[[Handler], Handler]:
    """A page that shows: needs a session whose token has ``scope``."""

    def mark(handler: Handler) -> Handler:
        handler.ui_scope = scope  # type: ignore[attr-defined]
        return handler

    return mark


def action(scope: str = "write") -> Callable[[Handler], Handler]:
    """A POST that changes something: needs ``scope`` and the session's CSRF token."""

    def mark(handler: Handler) -> Handler:
        handler.ui_scope = scope  # type: ignore[attr-defined]
        handler.ui_write = True  # type: ignore[attr-defined]
        return handler

    return mark


def public(handler: Handler) -> Handler:
    """Reachable without a session (signing in)."""
    handler.ui_scope = None  # type: ignore[attr-defined]
    return handler


def client_of(request: web.Request, trusted: tuple[str, ...]) -> tuple[str, bool]:
    """The client's address and whether it reached us over TLS. ``X-Forwarded-For`` and
    ``X-Forwarded-Proto`` count only when the peer is one of the ``trusted`` proxies."""
    peer = request.remote or ""
    nets = [ipaddress.ip_network(n) for n in trusted]

    def is_trusted(text: str) -> bool:
        try:
            address = ipaddress.ip_address(text.strip())
        except ValueError:
            return False
        return any(address in net for net in nets)

    if not is_trusted(peer):
        return peer, request.secure
    hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    client = next((h for h in reversed(hops) if not is_trusted(h)), hops[0] if hops else peer)
    proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return client[:64], proto == "https" or request.secure


def secure_cookies(request: web.Request) -> bool:
    settings = ui_of(request).settings
    if settings.secure_cookie != "auto":
        return settings.secure_cookie == "true"
    return client_of(request, settings.trusted_proxies)[1]


def set_cookie(
    request: web.Request, response: web.StreamResponse, name: str, value: str, max_age: int
) -> None:
    response.set_cookie(
        name,
        value,
        path=HOME,
        max_age=max_age,
        httponly=True,
        samesite="Strict",
        secure=secure_cookies(request),
    )


def redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


def safe_return(value: object, default: str = HOME) -> str:
    """A path on this page to go back to: never another site (``//host``, ``/\\host``)."""
    if not isinstance(value, str) or not value.startswith(HOME) or len(value) > 2000:
        return default
    path = value.split("?", 1)[0]
    if any(c in value for c in "\\\r\n\t") or "//" in path or "/." in path:
        return default  # another host, or a way out of /ui/ once the browser resolves the dots
    return value


def session_of(request: web.Request) -> Session:
    return request[SESSION]


def principal_of(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def text_field(form: Mapping[str, Any], name: str, limit: int, *, default: str = "") -> str:
    """A form field as text of at most ``limit`` characters (a file or a longer text: refused)."""
    value = form.get(name, default)
    if not isinstance(value, str):
        raise InvalidEntry(name, "must be text")
    if len(value) > limit:
        raise InvalidEntry(name, f"longer than {limit} characters")
    return value


def query_text(request: web.Request, name: str, limit: int = 200) -> str:
    return text_field(request.query, name, limit).strip()


def before_param(request: web.Request) -> int | None:
    """The keyset cursor of a page (older rows than this id), or None for the first page."""
    value = request.query.get("before", "")
    if value.isascii() and value.isdigit() and len(value) < 19:
        return int(value)
    return None


def render(request: web.Request, template: str, status: int = 200, **values: Any) -> web.Response:
    session: Session | None = request.get(SESSION)
    principal: Principal | None = request.get(PRINCIPAL)
    granted = principal.granted if principal else frozenset()
    context = {
        "me": principal,
        "csrf": session.csrf if session else "",
        "flashes": session.take_flashes() if session else [],
        "can_write": "write" in granted,
        "nav": [(slug, title) for slug, title, scope in NAV if scope in granted],
        "here": request.path,
        "here_qs": request.path_qs,
        "query": request.query,
        **values,
    }
    return aiohttp_jinja2.render_template(template, request, context, status=status)


async def perform(request: web.Request, back: str, do: Callable[[], Awaitable[str]]) -> web.Response:
    """Run a write, tell the outcome on the next page, and go ``back`` (POST, redirect, GET)."""
    session = session_of(request)
    try:
        session.flash("ok", await do())
    except (InvalidEntry, DuplicateEntry, EntryNotFound, ListFileError) as exc:
        session.flash("error", str(exc))
    return redirect(safe_return(back))


def _secure_headers(response: web.StreamResponse, static: bool) -> None:
    headers = response.headers
    headers["Content-Security-Policy"] = CSP
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    headers["Referrer-Policy"] = "no-referrer"
    headers["Cache-Control"] = "no-cache" if static else "no-store"


async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    ui = ui_of(request)
    target = request.match_info.handler
    scope: str | None = getattr(target, "ui_scope", "read")
    session = ui.sessions.get(request.cookies.get(SESSION_COOKIE))
    principal: Principal | None = None
    if session is not None:
        principal = await ui.api.tokens.principal(session.token)
        if principal is None or "read" not in principal.granted:
            ui.sessions.end_all(session.token)  # revoked since: every session it opened ends
            session = None
    if session is not None and principal is not None:
        request[SESSION] = session
        request[PRINCIPAL] = principal
    if scope is None:
        return await handler(request)
    if session is None or principal is None:
        if request.method == "GET":
            return redirect(
                f"{HOME}signin?next={quote(request.path_qs)}" if request.path != HOME else f"{HOME}signin"
            )
        raise web.HTTPForbidden(text="You are not signed in (or your session ended): sign in again.")
    if getattr(target, "ui_write", False):
        if request.headers.get("Sec-Fetch-Site") == "cross-site":
            raise web.HTTPForbidden(text="A change may only be sent from this page, not from another site.")
        form = await request.post()
        sent = form.get("csrf")
        if not session.csrf_ok(sent if isinstance(sent, str) else None):
            raise web.HTTPForbidden(
                text="The form's CSRF token is missing or out of date: reload the page and try again."
            )
    if scope not in principal.granted:
        raise web.HTTPForbidden(text=f"Token {principal.name!r} lacks the {scope!r} scope this needs.")
    return await handler(request)


def error_page(request: web.Request, status: int, message: str) -> web.Response:
    return render(request, "error.html", status=status, status_code=status, message=message)


@web.middleware
async def ui_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    static = request.path.startswith(STATIC)
    started = time.perf_counter()
    response: web.StreamResponse
    try:
        response = await (handler(request) if static else _guard(request, handler))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        response = error_page(request, exc.status, message or "error")
        if isinstance(exc, web.HTTPMethodNotAllowed):
            response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
    except (InvalidEntry, DuplicateEntry, EntryNotFound) as exc:
        status = 422 if isinstance(exc, InvalidEntry) else 409 if isinstance(exc, DuplicateEntry) else 404
        response = error_page(request, status, str(exc))
    except StoreUnavailable as exc:
        response = error_page(request, 503, f"The store cannot be reached now; try again shortly. ({exc})")
        response.headers["Retry-After"] = "5"
    except Exception:
        log.exception("internal error in %s %s", request.method, request.path)
        response = error_page(request, 500, "Internal error; the server log has the details.")
    _secure_headers(response, static)
    # What the page cost this server, rendering included (bench/ui.py reads it).
    response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
    return response
