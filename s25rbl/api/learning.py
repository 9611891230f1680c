"""Routes of the learning loop: reports in; learned entries and pool suggestions for review."""

from __future__ import annotations

import math

from aiohttp import web

from s25rbl.api import schemas
from s25rbl.api.auth import principal_of, requires
from s25rbl.api.context import context_of
from s25rbl.api.guard import BATCH_BODY, accepts
from s25rbl.api.problems import Problem
from s25rbl.errors import InvalidEntry, ReportsLimited
from s25rbl.learning.ingest import MAX_BATCH
from s25rbl.lists.values import check_reason, parse_ip
from s25rbl.service.learning import SUGGESTION_STATUSES
from s25rbl.service.views import entry_dict, forbidden_dict, learned_dicts, suggestion_dict


@requires("report")
@accepts(BATCH_BODY)
async def reports_create(request: web.Request) -> web.Response:
    context = context_of(request)
    body = await schemas.read_json(request)
    if isinstance(body, dict) and "reports" in body:
        schemas.only_params(body, {"reports"})
        items = body["reports"]
        if not isinstance(items, list) or not items:
            raise Problem(
                422, "reports: must be a non-empty array", errors=[{"field": "reports", "problem": "empty"}]
            )
        if len(items) > MAX_BATCH:
            raise Problem(413, f"at most {MAX_BATCH} reports per request; got {len(items)}")
    else:
        items = [body]
    try:
        result = await context.services.learning.report(items, reporter=principal_of(request).actor)
    except ReportsLimited as exc:
        context.metrics.reports.labels("limited").inc(len(items))
        raise Problem(
            429, str(exc), headers={"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
        ) from None
    outcomes = {
        "accepted": result.accepted,
        "duplicate": result.duplicate,
        "refused": result.refused - result.limited,
        "limited": result.limited,
    }
    for outcome, count in outcomes.items():
        context.metrics.reports.labels(outcome).inc(count)
    return web.json_response(result.as_json(), status=202)


@requires("report")
async def report_zones(request: web.Request) -> web.Response:
    """The zones whose rejections are worth reporting: what a log reporter watches for."""
    schemas.only_params(request.query, set())
    dns = context_of(request).settings.dns
    return web.json_response({"zones": [z for z in (dns.zone, dns.hostname_zone) if z]})


@requires("read")
async def learned_list(request: web.Request) -> web.Response:
    schemas.only_params(request.query, {"cursor", "limit"})
    after, limit = schemas.page_params(request.query)
    page = await context_of(request).services.learning.learned(after_id=after, limit=limit + 1)
    items = learned_dicts(page)
    next_cursor = str(page.entries[limit - 1].id) if len(page.entries) > limit else None
    forbidden = [forbidden_dict(b) for b in page.forbidden]
    more = page.forbidden[-1].ip if page.forbidden_more else None
    return web.json_response(
        {
            "items": items[:limit],
            "next_cursor": next_cursor,
            "forbidden": forbidden,
            "forbidden_next_cursor": more,
        }
    )


@requires("read")
async def forbidden_list(request: web.Request) -> web.Response:
    """Every address forbidden to learn, paged (``GET /v1/learned`` shows only the first ones)."""
    schemas.only_params(request.query, {"cursor", "limit"})
    after = ""
    if "cursor" in request.query:
        try:
            after = str(parse_ip(request.query["cursor"], "cursor"))
        except InvalidEntry as exc:
            raise schemas.field_problem(exc) from None
    limit = schemas.int_param(request.query, "limit", 100, 1, schemas.MAX_PAGE)
    rows = await context_of(request).services.learning.forbidden(after=after, limit=limit + 1)
    next_cursor = rows[limit - 1].ip if len(rows) > limit else None
    return web.json_response({"items": [forbidden_dict(b) for b in rows[:limit]], "next_cursor": next_cursor})


@requires("write")
async def learned_delete(request: web.Request) -> web.Response:
    schemas.only_params(request.query, {"forbid", "reason"})
    try:
        ip = str(parse_ip(request.match_info["ip"], "ip"))
        reason = check_reason(request.query.get("reason", ""))
    except InvalidEntry as exc:
        raise schemas.field_problem(exc) from None
    forbid = schemas.bool_param(request.query, "forbid") is True
    learning = context_of(request).services.learning
    await learning.revoke(ip, actor=principal_of(request).actor, forbid=forbid, reason=reason)
    return web.Response(status=204)


@requires("read")
async def suggestions_list(request: web.Request) -> web.Response:
    schemas.only_params(request.query, {"status", "cursor", "limit"})
    status = request.query.get("status")
    if status is not None and status not in SUGGESTION_STATUSES:
        raise Problem(
            422, "status: use open, approved or rejected", errors=[{"field": "status", "problem": "enum"}]
        )
    after, limit = schemas.page_params(request.query)
    rows = await context_of(request).services.learning.suggestions(status, after_id=after, limit=limit + 1)
    return web.json_response(schemas.page(rows, limit, suggestion_dict))


@requires("write")
async def suggestion_approve(request: web.Request) -> web.Response:
    learning = context_of(request).services.learning
    suggestion, entry = await learning.approve(
        schemas.path_id(request, "suggestion"), actor=principal_of(request).actor
    )
    return web.json_response({"suggestion": suggestion_dict(suggestion), "entry": entry_dict(entry)})


@requires("write")
async def suggestion_reject(request: web.Request) -> web.Response:
    learning = context_of(request).services.learning
    suggestion = await learning.reject(
        schemas.path_id(request, "suggestion"), actor=principal_of(request).actor
    )
    return web.json_response(suggestion_dict(suggestion))


def setup(app: web.Application) -> None:
    r = app.router
    r.add_post("/v1/reports", reports_create)
    r.add_get("/v1/reports/zones", report_zones)
    r.add_get("/v1/learned", learned_list)
    r.add_get("/v1/forbidden", forbidden_list)
    r.add_delete("/v1/learned/{ip}", learned_delete)
    r.add_get("/v1/suggestions", suggestions_list)
    r.add_post("/v1/suggestions/{id}/approve", suggestion_approve)
    r.add_post("/v1/suggestions/{id}/reject", suggestion_reject)
