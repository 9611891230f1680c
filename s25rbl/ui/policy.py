"""Review → Greylist and Review → Tarpits: the policy service's state (product §7, §8).

The greylisted triplets and the tarpitted sessions, searched and paged in SQL; a triplet is
cleared through the same service as ``DELETE /v1/greylist/{id}``, and a client address is
whitelisted through the same service as ``POST /v1/entries``: one write path, audited with the
token's name.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from s25rbl.config import PolicySettings
from s25rbl.errors import InvalidEntry
from s25rbl.lists.values import EntrySpec, parse_ip
from s25rbl.policy.decide import grace
from s25rbl.store.models import GreylistTriplet, TarpitRecord
from s25rbl.store.policy_browse import TARPIT_STATUSES, TRIPLET_STATUSES, TarpitSearch, TripletSearch
from s25rbl.ui.base import HOME, action, before_param, perform, principal_of, query_text, text_field
from s25rbl.ui.context import ui_of
from s25rbl.ui.review import ReviewView, add_view

GREYLIST_PAGE = 30  # two forms a row: a page stays light (under 50 KB with the longest values)
TARPITS_PAGE = 50


def _settings(request: web.Request) -> PolicySettings:
    return ui_of(request).api.settings.policy


def network_of(text: str, settings: PolicySettings) -> str | None:
    """The triplet network an address (with the configured prefix) or a network names; None
    when ``text`` is neither."""
    try:
        if "/" in text:
            return str(ipaddress.ip_network(text, strict=False))
        ip = parse_ip(text, "q")
    except (ValueError, InvalidEntry):
        return None
    prefix = settings.ipv4_prefix if ip.version == 4 else settings.ipv6_prefix
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def _status(request: web.Request, allowed: tuple[str, ...]) -> str:
    value = request.query.get("status", "all")
    return value if value in allowed else "all"


def triplet_times(t: GreylistTriplet, settings: PolicySettings) -> dict[str, datetime]:
    """When a waiting triplet's retry may pass, and when the triplet expires."""
    if t.passed_at is None:
        return {
            "passes_from": t.first_seen + timedelta(seconds=settings.delay),
            "expires": t.first_seen + timedelta(seconds=settings.retry_window),
        }
    return {"expires": t.last_seen + timedelta(seconds=settings.max_age)}


def tarpit_status(r: TarpitRecord, hung_up_before: datetime) -> str:
    if r.delivered_at is not None:
        return "delivered"
    if r.survived_at is not None:
        return "survived"
    return "abandoned" if r.started_at < hung_up_before else "in tarpit"


async def _greylist(request: web.Request) -> dict[str, Any]:
    ui = ui_of(request)
    settings = _settings(request)
    text = query_text(request, "q")
    network = network_of(text, settings) if text else None
    search = TripletSearch(
        network=network,
        text=None if network else (text or None),
        status=_status(request, TRIPLET_STATUSES),
    )
    page, names = await ui.api.services.browse.greylist(
        search, before_id=before_param(request), limit=GREYLIST_PAGE
    )
    return {
        "q": text,
        "network": network,
        "status_filter": search.status,
        "statuses": TRIPLET_STATUSES,
        "rows": page.rows,
        "names": names,
        "times": {t.id: triplet_times(t, settings) for t in page.rows},
        "older": page.next_before,
        "window_ended": page.window_ended,
        "settings": settings,
    }


async def _tarpits(request: web.Request) -> dict[str, Any]:
    ui = ui_of(request)
    settings = _settings(request)
    text = query_text(request, "q")
    try:
        client: str | None = str(parse_ip(text, "q")) if text else None
    except InvalidEntry:
        client = None
    hung_up_before = ui.api.services.clock.now() - timedelta(seconds=settings.tarpit + grace(settings.tarpit))
    search = TarpitSearch(
        hung_up_before,
        client=client,
        text=None if client else (text or None),
        status=_status(request, TARPIT_STATUSES),
    )
    page = await ui.api.services.browse.tarpits(search, before_id=before_param(request), limit=TARPITS_PAGE)
    return {
        "q": text,
        "status_filter": search.status,
        "statuses": TARPIT_STATUSES,
        "rows": page.rows,
        "outcomes": {r.id: tarpit_status(r, hung_up_before) for r in page.rows},
        "older": page.next_before,
        "window_ended": page.window_ended,
        "settings": settings,
    }


def _back(form: Any, default: str) -> str:
    value = form.get("back")
    return value if isinstance(value, str) else default


def _triplet_id(request: web.Request) -> int:
    text = request.match_info["id"]
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise InvalidEntry("triplet", f"{text!r} is not a triplet number")
    return int(text)


@action()
async def clear_triplet(request: web.Request) -> web.StreamResponse:
    """Forget a triplet (as ``DELETE /v1/greylist/{id}``): its next attempt is a first one."""
    form = await request.post()
    policy = ui_of(request).api.services.policy

    async def do() -> str:
        row = await policy.delete_triplet(_triplet_id(request), actor=principal_of(request).actor)
        return (
            f"Cleared {row.network} <{row.sender}> → <{row.recipient}>: "
            "its next attempt is greylisted as a first attempt."
        )

    return await perform(request, _back(form, f"{HOME}review/greylist"), do)


@action()
async def whitelist_client(request: web.Request) -> web.StreamResponse:
    """Whitelist a client address the policy treated (as ``POST /v1/entries``)."""
    form = await request.post()
    lists = ui_of(request).api.services.lists

    async def do() -> str:
        ip = str(parse_ip(text_field(form, "ip", 64).strip(), "address"))
        spec = EntrySpec.build("white", "ip", ip, text_field(form, "reason", 255))
        entry = await lists.add_one(spec, actor=principal_of(request).actor)
        return f"whitelisted ip {ip} (entry #{entry.id}): the policy and the DNS zones let it through."

    return await perform(request, _back(form, f"{HOME}review/greylist"), do)


def setup(app: web.Application) -> None:
    add_view(ReviewView("greylist", "Greylist", "review_greylist.html", _greylist))
    add_view(ReviewView("tarpits", "Tarpits", "review_tarpits.html", _tarpits))
    app.router.add_post("/greylist/{id}/clear", clear_triplet)
    app.router.add_post("/policy/whitelist", whitelist_client)
