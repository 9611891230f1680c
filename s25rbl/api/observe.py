"""Routes that look without changing anything: verdict explanations, figures, the audit log
and the API's own description."""

from __future__ import annotations

import contextlib
from pathlib import Path

from aiohttp import web

from s25rbl.api import schemas
from s25rbl.api.auth import requires
from s25rbl.api.context import context_of
from s25rbl.api.problems import Problem
from s25rbl.errors import InvalidEntry, StoreUnavailable
from s25rbl.lists.values import parse_address_literal, parse_hostname, parse_ip, parse_since
from s25rbl.node.counters import LOOKUP_OUTCOMES
from s25rbl.policy.explain import explain as explain_policy
from s25rbl.service.views import audit_dict


def spec_path() -> Path:
    """openapi.yaml: inside the installed wheel, or at the top of a source checkout."""
    packaged = Path(__file__).resolve().parent.parent / "openapi.yaml"
    return packaged if packaged.is_file() else Path(__file__).resolve().parents[2] / "openapi.yaml"


@requires("read")
async def check_ip(request: web.Request) -> web.Response:
    schemas.only_params(request.query, {"sender", "recipient"})
    try:
        ip = parse_ip(request.match_info["ip"], "ip")
    except InvalidEntry as exc:
        raise schemas.field_problem(exc) from None
    sender, recipient = request.query.get("sender"), request.query.get("recipient")
    for field, value in (("sender", sender), ("recipient", recipient)):
        if value is not None and len(value) > 512:
            raise schemas.field_problem(InvalidEntry(field, "at most 512 characters"))
    context = context_of(request)
    verdict = await context.engine.decide(ip)
    explanation = verdict.explain()
    explanation["policy"] = None
    # What the policy service would do with the client's next session. The verdict is from
    # memory, the policy's state from the store: with the store away, show the verdict alone.
    if context.policy is not None:
        with contextlib.suppress(StoreUnavailable):
            explanation["policy"] = await explain_policy(
                verdict,
                context.settings.policy,
                context.services.policy,
                sender=sender,
                recipient=recipient,
                now=context.services.clock.now().timestamp(),
            )
    return web.json_response(explanation)


@requires("read")
async def check_name(request: web.Request) -> web.Response:
    schemas.only_params(request.query, {"name"})
    raw = request.query.get("name")
    if not raw:
        raise Problem(422, "name: is required", errors=[{"field": "name", "problem": "is required"}])
    if raw.startswith("[") and raw.endswith("]"):
        # An address literal as written in a HELO: [192.0.2.1] or [IPv6:2001:db8::1].
        if parse_address_literal(raw) is None:
            raise schemas.field_problem(InvalidEntry("name", "not a hostname or an address literal"))
        name = raw.lower()
    else:
        try:
            name = parse_hostname(raw, "name")
        except InvalidEntry as exc:
            raise schemas.field_problem(exc) from None
    verdict = context_of(request).engine.decide_name(name)
    return web.json_response({"name": name, **verdict.explain()})


@requires("read")
async def stats(request: web.Request) -> web.Response:
    context = context_of(request)
    counters = context.counters()  # with dns.workers: every worker's, added up
    queries: dict[str, dict[str, int]] = {}
    for (zone, result, _step), count in counters.queries.items():
        queries.setdefault(zone, {})
        queries[zone][result] = queries[zone].get(result, 0) + count
    return web.json_response(
        {
            "queries": queries,
            "cache_hit_rate": counters.cache_hit_rate,
            "lookups": {k: counters.lookups[k] for k in LOOKUP_OUTCOMES},
            "lookups_in_flight": counters.inflight,
            "lists": context.lists.index.sizes(),
            "list_version": context.lists.index.version,
            "policy": context.policy.figures() if context.policy is not None else None,
        }
    )


@requires("admin")
async def audit(request: web.Request) -> web.Response:
    schemas.only_params(request.query, {"cursor", "limit", "since", "actor"})
    after, limit = schemas.page_params(request.query)
    services = context_of(request).services
    try:
        since = request.query.get("since")
        start = parse_since(since, "since", services.clock.now()) if since is not None else None
    except InvalidEntry as exc:
        raise schemas.field_problem(exc) from None
    actor = request.query.get("actor")
    events = await services.audit.events(after_id=after, limit=limit + 1, since=start, actor=actor)
    return web.json_response(schemas.page(events, limit, audit_dict))


async def openapi(request: web.Request) -> web.Response:
    # Open (auth.OPEN_PATHS): the description holds no secret and helps a client get started.
    return web.Response(text=spec_path().read_text(encoding="utf-8"), content_type="application/yaml")


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/v1/check/{ip}", check_ip)
    r.add_get("/v1/check", check_name)
    r.add_get("/v1/stats", stats)
    r.add_get("/v1/audit", audit)
    r.add_get("/v1/openapi.yaml", openapi)
