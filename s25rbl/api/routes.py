"""The /v1 routes. Each: validate, one unit of work through the service layer, refresh this
node's lists when something changed (so its next DNS answer reflects the write), JSON out."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from aiohttp import web

from s25rbl.api import schemas
from s25rbl.api.auth import principal_of, requires
from s25rbl.api.common import parts_of, path_id
from s25rbl.api.problems import Problem
from s25rbl.counters import LOOKUP_OUTCOMES, node_snapshot
from s25rbl.entries import EntrySpec, parse_hostname, parse_ip
from s25rbl.errors import ImportError_, InvalidEntry
from s25rbl.listio import entry_dict, export_json, export_postfix, export_rbldnsd, parse_list_file
from s25rbl.service import (
    add_entries,
    audit_events,
    get_entry,
    import_specs,
    list_entries,
    remove_entry,
    update_entry,
)
from s25rbl.store.models import AuditEvent, ListName
from s25rbl.store.repository import EntryFilter

MAX_IMPORT_BYTES = 8 * 1024 * 1024


def spec_path() -> Path:
    """openapi.yaml: inside the installed wheel, or at the top of a source checkout."""
    packaged = Path(__file__).resolve().parent.parent / "openapi.yaml"
    return packaged if packaged.is_file() else Path(__file__).resolve().parents[2] / "openapi.yaml"


async def _changed(request: web.Request) -> None:
    """Make this node's next DNS answer reflect the write just committed."""
    lists = parts_of(request).lists
    if lists is not None:
        await lists.reload()


# --- verdicts ------------------------------------------------------------------------------


@requires("read")
async def check_ip(request: web.Request) -> web.Response:
    try:
        ip = parse_ip(request.match_info["ip"], "ip")
    except InvalidEntry as exc:
        raise Problem(422, str(exc), errors=[{"field": "ip", "problem": exc.problem}]) from None
    engine = parts_of(request).engine
    assert engine is not None
    verdict = await engine.decide(ip)
    return web.json_response(verdict.explain())


@requires("read")
async def check_name(request: web.Request) -> web.Response:
    schemas.only_params(request.query, {"name"})
    raw = request.query.get("name")
    if not raw:
        raise Problem(422, "name: is required", errors=[{"field": "name", "problem": "is required"}])
    name = None
    if raw.startswith("[") and raw.endswith("]"):
        try:  # an address literal as written in a HELO: [192.0.2.1] or [IPv6:2001:db8::1]
            inner = raw[1:-1]
            parse_ip(inner[5:] if inner.lower().startswith("ipv6:") else inner, "name")
            name = raw.lower()
        except InvalidEntry:
            raise Problem(
                422,
                "name: not a hostname or an address literal",
                errors=[{"field": "name", "problem": "not a hostname or an address literal"}],
            ) from None
    if name is None:
        try:
            name = parse_hostname(raw, "name")
        except InvalidEntry as exc:
            raise Problem(422, str(exc), errors=[{"field": "name", "problem": exc.problem}]) from None
    engine = parts_of(request).engine
    assert engine is not None
    return web.json_response({"name": name, **engine.decide_name(name).explain()})


# --- entries -------------------------------------------------------------------------------


@requires("read")
async def entries_list(request: web.Request) -> web.Response:
    parts = parts_of(request)
    flt, _ = schemas.entry_filter(request.query)
    after, limit = schemas.page_params(request.query)
    assert parts.store is not None
    rows = await list_entries(parts.store, flt, clock=parts.clock, after_id=after, limit=limit + 1)
    return web.json_response(schemas.page(rows, limit, entry_dict))


@requires("write")
async def entries_create(request: web.Request) -> web.Response:
    parts = parts_of(request)
    assert parts.store is not None
    body = await schemas.read_json(request)
    now = parts.clock.now()
    specs, batch = schemas.entry_batch(body, now)
    created = await add_entries(parts.store, specs, clock=parts.clock, actor=principal_of(request).actor)
    await _changed(request)
    items = [entry_dict(e) for e in created]
    if batch:
        return web.json_response({"items": items}, status=201)
    return web.json_response(items[0], status=201, headers={"Location": f"/v1/entries/{created[0].id}"})


@requires("read")
async def entry_get(request: web.Request) -> web.Response:
    parts = parts_of(request)
    assert parts.store is not None
    return web.json_response(entry_dict(await get_entry(parts.store, path_id(request, "entry"))))


@requires("write")
async def entry_patch(request: web.Request) -> web.Response:
    parts = parts_of(request)
    assert parts.store is not None
    entry_id = path_id(request, "entry")
    change = schemas.entry_patch(await schemas.read_json(request), parts.clock.now())
    entry = await update_entry(
        parts.store, entry_id, clock=parts.clock, actor=principal_of(request).actor, **change
    )
    await _changed(request)
    return web.json_response(entry_dict(entry))


@requires("write")
async def entry_delete(request: web.Request) -> web.Response:
    parts = parts_of(request)
    assert parts.store is not None
    await remove_entry(
        parts.store, path_id(request, "entry"), clock=parts.clock, actor=principal_of(request).actor
    )
    await _changed(request)
    return web.Response(status=204)


# --- import and export ---------------------------------------------------------------------


def _parse_csv(text: str) -> list[EntrySpec]:
    errors: list[tuple[int, str]] = []
    specs: list[EntrySpec] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple[int, list[str]]] = []
    try:
        for row in reader:
            rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise ImportError_([(reader.line_num, f"not valid CSV: {exc}")]) from None
    for number, row in rows:
        if not row or (number == 1 and row[:3] == ["list", "kind", "value"]) or row[0].startswith("#"):
            continue
        if len(row) < 3 or len(row) > 4:
            errors.append((number, "expected list,kind,value[,reason]"))
            continue
        try:
            specs.append(
                EntrySpec.build(
                    row[0].strip(), row[1].strip(), row[2].strip(), row[3] if len(row) > 3 else ""
                )
            )
        except InvalidEntry as exc:
            errors.append((number, str(exc)))
    if errors:
        raise ImportError_(errors)
    return specs


def _parse_json_entries(text: str) -> list[EntrySpec]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Problem(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, list):
        raise Problem(
            422,
            "a JSON import is an array of entry objects",
            errors=[{"field": "body", "problem": "not an array"}],
        )
    errors: list[tuple[int, str]] = []
    specs = []
    for i, item in enumerate(data, start=1):
        if not isinstance(item, dict):
            errors.append((i, "not an object"))
            continue
        # Other members (id, source, ... as exported) are ignored, so an export re-imports.
        wrong = [k for k in ("list", "kind", "value", "reason") if k in item and not isinstance(item[k], str)]
        if wrong:
            errors.append((i, f"{wrong[0]}: must be a string"))
            continue
        try:
            specs.append(
                EntrySpec.build(
                    str(item.get("list", "")),
                    str(item.get("kind", "")),
                    str(item.get("value", "")),
                    str(item.get("reason", "")),
                )
            )
        except InvalidEntry as exc:
            errors.append((i, str(exc)))
    if errors:
        raise ImportError_(errors)
    return specs


@requires("write")
async def import_entries(request: web.Request) -> web.Response:
    parts = parts_of(request)
    assert parts.store is not None
    schemas.only_params(request.query, {"list"})
    default_list = schemas.list_param(request.query)
    raw = await request.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Problem(400, "the body is not UTF-8 text") from None
    kind = request.content_type
    if kind == "text/plain":
        specs = parse_list_file(text, default_list)
    elif kind == "text/csv":
        specs = _parse_csv(text)
    elif kind == "application/json":
        specs = _parse_json_entries(text)
    else:
        raise Problem(415, "send text/plain (Postfix table or plain lines), text/csv or application/json")
    added, present = await import_specs(
        parts.store, specs, clock=parts.clock, creator=principal_of(request).actor
    )
    if added:
        await _changed(request)
    return web.json_response({"added": added, "already_present": present})


@requires("read")
async def export_entries(request: web.Request) -> web.Response:
    parts = parts_of(request)
    assert parts.store is not None
    schemas.only_params(request.query, {"format", "list"})
    fmt = request.query.get("format", "json")
    if fmt not in ("postfix", "rbldnsd", "json", "csv"):
        raise Problem(
            422,
            f"format: {fmt!r}: use postfix, rbldnsd, json or csv",
            errors=[{"field": "format", "problem": "unknown format"}],
        )
    list_ = schemas.list_param(request.query)
    entries = await list_entries(
        parts.store, EntryFilter(list=list_, include_expired=False), clock=parts.clock
    )
    if fmt == "json":
        return web.Response(text=export_json(entries), content_type="application/json")
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["list", "kind", "value", "reason"])
        for e in entries:
            writer.writerow([e.list.value, e.kind.value, e.value, e.reason])
        return web.Response(text=out.getvalue(), content_type="text/csv")
    if fmt == "rbldnsd":
        return web.Response(text=export_rbldnsd(entries, list_ or ListName.BLACK), content_type="text/plain")
    return web.Response(text=export_postfix(entries), content_type="text/plain")


# --- observing -----------------------------------------------------------------------------


@requires("read")
async def stats(request: web.Request) -> web.Response:
    parts = parts_of(request)
    counters = node_snapshot(parts)  # with dns.workers: every worker's, added up
    queries: dict[str, dict[str, int]] = {}
    for (zone, result, _step), count in counters.queries.items():
        queries.setdefault(zone, {})
        queries[zone][result] = queries[zone].get(result, 0) + count
    lookups = {}
    if parts.rdns is not None:
        lookups = {k: counters.lookups[k] for k in LOOKUP_OUTCOMES}
    lists = parts.lists.index.sizes() if parts.lists is not None else {}
    return web.json_response(
        {
            "queries": queries,
            "cache_hit_rate": counters.cache_hit_rate,
            "lookups": lookups,
            "lookups_in_flight": counters.inflight,
            "lists": lists,
            "list_version": parts.lists.index.version if parts.lists is not None else None,
        }
    )


def _audit_dict(e: AuditEvent) -> dict[str, object]:
    return {
        "id": e.id,
        "at": e.at.isoformat(),
        "actor": e.actor,
        "action": e.action,
        "target": e.target,
        "detail": e.detail,
    }


@requires("admin")
async def audit(request: web.Request) -> web.Response:
    parts = parts_of(request)
    assert parts.store is not None
    schemas.only_params(request.query, {"cursor", "limit"})
    after, limit = schemas.page_params(request.query)
    events = await audit_events(parts.store, after_id=after, limit=limit + 1)
    return web.json_response(schemas.page(events, limit, _audit_dict))


@requires("read")
async def openapi(request: web.Request) -> web.Response:
    return web.Response(text=spec_path().read_text(encoding="utf-8"), content_type="application/yaml")


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/v1/check/{ip}", check_ip)
    r.add_get("/v1/check", check_name)
    r.add_get("/v1/entries", entries_list)
    r.add_post("/v1/entries", entries_create)
    r.add_get("/v1/entries/{id}", entry_get)
    r.add_patch("/v1/entries/{id}", entry_patch)
    r.add_delete("/v1/entries/{id}", entry_delete)
    r.add_post("/v1/import", import_entries)
    r.add_get("/v1/export", export_entries)
    r.add_get("/v1/stats", stats)
    r.add_get("/v1/audit", audit)
    r.add_get("/v1/openapi.yaml", openapi)
