"""Review: what learning found, and the operator's one-click decisions on it.

The page is a row of views, each a loader plus a template (``VIEWS``): learned addresses with
their evidence, pool suggestions with the addresses behind them, forbidden addresses. Another
kind of evidence (the policy service's greylist and tarpits) is one more ``ReviewView``.
Every decision calls the same service as REST and the CLI, audited with the token's name.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from s25rbl.errors import InvalidEntry
from s25rbl.lists.values import check_reason, parse_ip
from s25rbl.service.learning import SUGGESTION_STATUSES
from s25rbl.ui.base import (
    HOME,
    action,
    before_param,
    perform,
    principal_of,
    query_text,
    render,
    text_field,
    view,
)
from s25rbl.ui.context import ui_of

LEARNED_PAGE = 20  # with the longest evidence the store holds, a page stays under 100 KB
EVIDENCE_SHOWN = 3
SUGGESTIONS_PAGE = 20
ADDRESSES_SHOWN = 12
FORBIDDEN_SHOWN = 100

Loader = Callable[[web.Request], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class ReviewView:
    """One view of the Review page: its path segment, its tab's title, its data and template."""

    slug: str
    title: str
    template: str
    load: Loader


async def _learned(request: web.Request) -> dict[str, Any]:
    browse = ui_of(request).api.services.browse
    text = query_text(request, "q")
    page, evidence = await browse.learned(
        text=text or None, before_id=before_param(request), limit=LEARNED_PAGE, per_address=EVIDENCE_SHOWN
    )
    return {
        "q": text,
        "rows": page.rows,
        "evidence": evidence,
        "older": page.next_before,
        "window_ended": page.window_ended,
    }


async def _suggestions(request: web.Request) -> dict[str, Any]:
    browse = ui_of(request).api.services.browse
    status = request.query.get("status", "open")
    if status not in (*SUGGESTION_STATUSES, "all"):
        status = "open"
    rows = await browse.suggestions(
        None if status == "all" else status, before_id=before_param(request), limit=SUGGESTIONS_PAGE + 1
    )
    more = len(rows) > SUGGESTIONS_PAGE
    rows = rows[:SUGGESTIONS_PAGE]
    evidence = {s.id: json.loads(s.evidence or "{}") for s in rows}
    return {
        "status_filter": status,
        "statuses": [*SUGGESTION_STATUSES, "all"],
        "rows": rows,
        "evidence": evidence,
        "shown": ADDRESSES_SHOWN,
        "older": rows[-1].id if more else None,
        "window_ended": False,
    }


async def _forbidden(request: web.Request) -> dict[str, Any]:
    text = query_text(request, "q")
    rows = await ui_of(request).api.services.browse.forbidden(text=text or None, limit=FORBIDDEN_SHOWN)
    return {"q": text, "rows": rows, "limit": FORBIDDEN_SHOWN}


VIEWS: list[ReviewView] = [
    ReviewView("learned", "Learned addresses", "review_learned.html", _learned),
    ReviewView("suggestions", "Pool suggestions", "review_suggestions.html", _suggestions),
    ReviewView("forbidden", "Forbidden", "review_forbidden.html", _forbidden),
]


def add_view(review_view: ReviewView) -> None:
    """Add a view to the Review page (e.g. the policy service's greylist and tarpits)."""
    if all(v.slug != review_view.slug for v in VIEWS):
        VIEWS.append(review_view)


@view()
async def review(request: web.Request) -> web.StreamResponse:
    slug = request.match_info.get("view", VIEWS[0].slug)
    current = next((v for v in VIEWS if v.slug == slug), None)
    if current is None:
        raise web.HTTPNotFound(text=f"The Review page has no view {slug!r}.")
    data = await current.load(request)
    return render(request, current.template, views=VIEWS, current=current, **data)


def _ip(form: Any) -> str:
    return str(parse_ip(text_field(form, "ip", 64).strip(), "address"))


def _reason(form: Any) -> str:
    return check_reason(text_field(form, "reason", 300))


def _back(form: Any, default: str) -> str:
    value = form.get("back")
    return value if isinstance(value, str) else default


@action()
async def revoke(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    learning = ui_of(request).api.services.learning
    forbid = form.get("forbid") == "1"

    async def do() -> str:
        ip = _ip(form)
        await learning.revoke(ip, actor=principal_of(request).actor, forbid=forbid, reason=_reason(form))
        return f"{ip} revoked and forbidden: it will not be learned again." if forbid else f"{ip} revoked."

    return await perform(request, _back(form, f"{HOME}review/learned"), do)


@action()
async def forbid(request: web.Request) -> web.StreamResponse:
    """Forbid learning an address that may not be learned yet (and revoke it if it is)."""
    form = await request.post()
    learning = ui_of(request).api.services.learning

    async def do() -> str:
        ip = _ip(form)
        await learning.revoke(ip, actor=principal_of(request).actor, forbid=True, reason=_reason(form))
        return f"{ip} is forbidden: it will not be learned."

    return await perform(request, _back(form, f"{HOME}review/forbidden"), do)


def _suggestion_id(request: web.Request) -> int:
    text = request.match_info["id"]
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise InvalidEntry("suggestion", f"{text!r} is not a suggestion number")
    return int(text)


@action()
async def approve(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    learning = ui_of(request).api.services.learning

    async def do() -> str:
        suggestion, entry = await learning.approve(_suggestion_id(request), actor=principal_of(request).actor)
        return f"{suggestion.domain} whitelisted (entry #{entry.id})."

    return await perform(request, _back(form, f"{HOME}review/suggestions"), do)


@action()
async def reject(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    learning = ui_of(request).api.services.learning

    async def do() -> str:
        suggestion = await learning.reject(_suggestion_id(request), actor=principal_of(request).actor)
        return f"Suggestion to whitelist {suggestion.domain} rejected."

    return await perform(request, _back(form, f"{HOME}review/suggestions"), do)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/review", review)
    r.add_get("/review/{view}", review)
    r.add_post("/learned/revoke", revoke)
    r.add_post("/learned/forbid", forbid)
    r.add_post("/suggestions/{id}/approve", approve)
    r.add_post("/suggestions/{id}/reject", reject)
