"""Routes of the learning loop: reports in; learned entries and pool suggestions for review."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from s25rbl.api import schemas
from s25rbl.api.auth import principal_of, requires
from s25rbl.api.common import parts_of, path_id
from s25rbl.api.problems import Problem
from s25rbl.entries import check_reason, parse_ip
from s25rbl.errors import InvalidEntry
from s25rbl.learning.ingest import MAX_BATCH, approve, reject
from s25rbl.listio import entry_dict
from s25rbl.store.models import EntryKind, EntrySource, ListName, Suggestion
from s25rbl.store.repository import (
    AuditRepository,
    EntryFilter,
    EntryRepository,
    LearnBlockRepository,
    ReportRepository,
    SuggestionRepository,
)


@requires("report")
async def reports_create(request: web.Request) -> web.Response:
    parts = parts_of(request)
    assert parts.store is not None and parts.learner is not None
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
    result = await parts.learner.ingest(parts.store, items, principal_of(request).actor)
    if parts.metrics is not None:
        for outcome in ("accepted", "duplicate", "refused"):
            parts.metrics.reports.labels(outcome).inc(getattr(result, outcome))
    if result.learned and parts.lists is not None:
        await parts.lists.reload()  # learned here: this node answers accordingly at once
    return web.json_response(result.as_json(), status=202)


def _report_dict(r: Any) -> dict[str, Any]:
    return {
        "time": r.reported_at.isoformat(),
        "client_ip": r.client_ip,
        "client_name": r.client_name,
        "helo": r.helo,
        "sender": r.sender,
        "recipient": r.recipient,
        "reporter": r.reporter,
    }


@requires("read")
async def learned_list(request: web.Request) -> web.Response:
    parts = parts_of(request)
    assert parts.store is not None
    schemas.only_params(request.query, {"cursor", "limit"})
    after, limit = schemas.page_params(request.query)
    flt = EntryFilter(
        list=ListName.WHITE, kind=EntryKind.IP, source=EntrySource.LEARNED, include_expired=False
    )
    async with parts.store.transaction() as session:
        rows = await EntryRepository(session).search(flt, parts.clock.now(), after_id=after, limit=limit + 1)
        reports = ReportRepository(session)
        evidence = {e.id: [_report_dict(r) for r in await reports.for_ip(e.value)] for e in rows[:limit]}
        blocks = await LearnBlockRepository(session).all()
    forbidden = [
        {"ip": b.ip, "reason": b.reason, "created_at": b.created_at.isoformat(), "created_by": b.created_by}
        for b in blocks
    ]
    body = schemas.page(rows, limit, lambda e: {**entry_dict(e), "evidence": evidence[e.id]})
    return web.json_response({**body, "forbidden": forbidden})


@requires("write")
async def learned_delete(request: web.Request) -> web.Response:
    parts = parts_of(request)
    assert parts.store is not None
    schemas.only_params(request.query, {"forbid", "reason"})
    try:
        ip = str(parse_ip(request.match_info["ip"], "ip"))
    except InvalidEntry as exc:
        raise Problem(422, str(exc), errors=[{"field": "ip", "problem": exc.problem}]) from None
    forbid = schemas.bool_param(request.query, "forbid") is True
    try:
        reason = check_reason(request.query.get("reason", ""))
    except InvalidEntry as exc:
        raise Problem(422, str(exc), errors=[{"field": "reason", "problem": exc.problem}]) from None
    actor = principal_of(request).actor
    now = parts.clock.now()
    async with parts.store.transaction() as session:
        entries = EntryRepository(session)
        entry = await entries.find(ListName.WHITE, EntryKind.IP, ip)
        learned = entry is not None and entry.source is EntrySource.LEARNED
        if not learned and not forbid:
            raise Problem(404, f"{ip} is not a learned address")
        audit = AuditRepository(session)
        if learned and entry is not None:
            await entries.remove(entry.id, now)
            await audit.add(now, actor, "learned.revoke", ip, reason)
        if forbid:
            await LearnBlockRepository(session).block(ip, reason, actor, now)
            await audit.add(now, actor, "learned.forbid", ip, reason)
    if parts.lists is not None:
        await parts.lists.reload()
    return web.Response(status=204)


def _suggestion_dict(s: Suggestion) -> dict[str, Any]:
    return {
        "id": s.id,
        "domain": s.domain,
        "status": s.status,
        "evidence": json.loads(s.evidence),
        "created_at": s.created_at.isoformat(),
        "updated_at": s.updated_at.isoformat(),
        "entry_id": s.entry_id,
    }


@requires("read")
async def suggestions_list(request: web.Request) -> web.Response:
    parts = parts_of(request)
    assert parts.store is not None
    schemas.only_params(request.query, {"status", "cursor", "limit"})
    status = request.query.get("status")
    if status is not None and status not in ("open", "approved", "rejected"):
        raise Problem(
            422, "status: use open, approved or rejected", errors=[{"field": "status", "problem": "enum"}]
        )
    after, limit = schemas.page_params(request.query)
    async with parts.store.transaction() as session:
        rows = await SuggestionRepository(session).search(status, after_id=after, limit=limit + 1)
    return web.json_response(schemas.page(rows, limit, _suggestion_dict))


@requires("write")
async def suggestion_approve(request: web.Request) -> web.Response:
    parts = parts_of(request)
    assert parts.store is not None
    async with parts.store.transaction() as session:
        suggestion, entry = await approve(
            session, path_id(request, "suggestion"), actor=principal_of(request).actor, now=parts.clock.now()
        )
        body = {"suggestion": _suggestion_dict(suggestion), "entry": entry_dict(entry)}
    if parts.lists is not None:
        await parts.lists.reload()
    return web.json_response(body)


@requires("write")
async def suggestion_reject(request: web.Request) -> web.Response:
    parts = parts_of(request)
    assert parts.store is not None
    async with parts.store.transaction() as session:
        suggestion = await reject(
            session, path_id(request, "suggestion"), actor=principal_of(request).actor, now=parts.clock.now()
        )
        body = _suggestion_dict(suggestion)
    return web.json_response(body)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_post("/v1/reports", reports_create)
    r.add_get("/v1/learned", learned_list)
    r.add_delete("/v1/learned/{ip}", learned_delete)
    r.add_get("/v1/suggestions", suggestions_list)
    r.add_post("/v1/suggestions/{id}/approve", suggestion_approve)
    r.add_post("/v1/suggestions/{id}/reject", suggestion_reject)
