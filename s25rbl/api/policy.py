"""Routes of the policy service's state: greylisted triplets and tarpitted sessions, listed,
searched and deleted (product §7). Deletions go through the one write path
(``service.policy``), audited; every node forgets what it cached of them within a second."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from aiohttp import web

from s25rbl.api import schemas
from s25rbl.api.auth import principal_of, requires
from s25rbl.api.context import context_of
from s25rbl.api.problems import Problem
from s25rbl.config import PolicySettings
from s25rbl.errors import InvalidEntry
from s25rbl.lists.values import parse_ip
from s25rbl.service.views import tarpit_dict, triplet_dict
from s25rbl.store.policy import PolicyFilter

PARAMS = {"client", "q", "cursor", "limit"}


def _text(query: Mapping[str, str]) -> str | None:
    text = query.get("q")
    if text is not None and len(text) > 200:
        raise Problem(422, "q: at most 200 characters", errors=[{"field": "q", "problem": "too long"}])
    return text or None


def _network(value: str, settings: PolicySettings) -> str:
    """A triplet's network from an address (the configured prefix) or a network as given."""
    try:
        if "/" in value:
            return str(ipaddress.ip_network(value.strip(), strict=False))
        ip = parse_ip(value, "client")
    except (ValueError, InvalidEntry):
        raise schemas.field_problem(
            InvalidEntry("client", f"{value[:80]!r} is not an address or a network")
        ) from None
    prefix = settings.ipv4_prefix if ip.version == 4 else settings.ipv6_prefix
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


@requires("read")
async def greylist_list(request: web.Request) -> web.Response:
    schemas.only_params(request.query, PARAMS | {"passed"})
    context = context_of(request)
    client = request.query.get("client")
    flt = PolicyFilter(
        client=_network(client, context.settings.policy) if client else None,
        text=_text(request.query),
        passed=schemas.bool_param(request.query, "passed"),
    )
    after, limit = schemas.page_params(request.query)
    rows = await context.services.policy.triplets(flt, after_id=after, limit=limit + 1)
    return web.json_response(schemas.page(rows, limit, triplet_dict))


@requires("write")
async def greylist_delete(request: web.Request) -> web.Response:
    triplet_id = schemas.path_id(request, "greylisted triplet")
    await context_of(request).services.policy.delete_triplet(triplet_id, actor=principal_of(request).actor)
    return web.Response(status=204)


@requires("read")
async def tarpits_list(request: web.Request) -> web.Response:
    schemas.only_params(request.query, PARAMS | {"survived"})
    client = request.query.get("client")
    try:
        address = str(parse_ip(client, "client")) if client else None
    except InvalidEntry as exc:
        raise schemas.field_problem(exc) from None
    flt = PolicyFilter(
        client=address, text=_text(request.query), passed=schemas.bool_param(request.query, "survived")
    )
    after, limit = schemas.page_params(request.query)
    rows = await context_of(request).services.policy.tarpits(flt, after_id=after, limit=limit + 1)
    return web.json_response(schemas.page(rows, limit, tarpit_dict))


@requires("write")
async def tarpits_delete(request: web.Request) -> web.Response:
    record_id = schemas.path_id(request, "tarpit record")
    await context_of(request).services.policy.delete_tarpit(record_id, actor=principal_of(request).actor)
    return web.Response(status=204)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/v1/greylist", greylist_list)
    r.add_delete("/v1/greylist/{id}", greylist_delete)
    r.add_get("/v1/tarpits", tarpits_list)
    r.add_delete("/v1/tarpits/{id}", tarpits_delete)
