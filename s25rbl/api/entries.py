"""The list routes: entries, import and export. Each validates, then calls the one write path
(``service.entries``), which reloads this node's lists so its next DNS answer reflects the write."""

from __future__ import annotations

import logging

from aiohttp import web

from s25rbl.api import schemas
from s25rbl.api.auth import principal_of, requires
from s25rbl.api.context import context_of
from s25rbl.api.guard import BATCH_BODY, LARGE_BODY, accepts, read_body
from s25rbl.api.problems import Problem
from s25rbl.errors import StoreUnavailable
from s25rbl.lists.formats import FORMATS_OUT, entry_dict, parse_csv, parse_entry_objects, parse_list_file
from s25rbl.lists.values import EntrySpec

log = logging.getLogger(__name__)

IMPORT_TYPES = {"text/plain": "postfix", "text/csv": "csv", "application/json": "json"}
EXPORT_TYPES = {
    "json": "application/json",
    "csv": "text/csv",
    "rbldnsd": "text/plain",
    "postfix": "text/plain",
}


@requires("read")
async def entries_list(request: web.Request) -> web.Response:
    flt, _ = schemas.entry_filter(request.query)
    after, limit = schemas.page_params(request.query)
    rows = await context_of(request).services.lists.search(flt, after_id=after, limit=limit + 1)
    return web.json_response(schemas.page(rows, limit, entry_dict))


@requires("write")
@accepts(BATCH_BODY)
async def entries_create(request: web.Request) -> web.Response:
    context = context_of(request)
    body = await schemas.read_json(request)
    specs, batch = schemas.entry_batch(body, context.services.clock.now())
    created = await context.services.lists.add(specs, actor=principal_of(request).actor)
    items = [entry_dict(e) for e in created]
    if batch:
        return web.json_response({"items": items}, status=201)
    return web.json_response(items[0], status=201, headers={"Location": f"/v1/entries/{created[0].id}"})


@requires("read")
async def entry_get(request: web.Request) -> web.Response:
    entry = await context_of(request).services.lists.get(schemas.path_id(request, "entry"))
    return web.json_response(entry_dict(entry))


@requires("write")
async def entry_patch(request: web.Request) -> web.Response:
    context = context_of(request)
    entry_id = schemas.path_id(request, "entry")
    change = schemas.entry_patch(await schemas.read_json(request), context.services.clock.now())
    entry = await context.services.lists.update(entry_id, actor=principal_of(request).actor, **change)
    return web.json_response(entry_dict(entry))


@requires("write")
async def entry_delete(request: web.Request) -> web.Response:
    entry_id = schemas.path_id(request, "entry")
    await context_of(request).services.lists.remove(entry_id, actor=principal_of(request).actor)
    return web.Response(status=204)


@requires("write")
@accepts(LARGE_BODY)
async def import_entries(request: web.Request) -> web.Response:
    schemas.only_params(request.query, {"list"})
    default_list = schemas.list_param(request.query)
    fmt = IMPORT_TYPES.get(request.content_type)
    if fmt is None:
        raise Problem(415, "send text/plain (Postfix table or plain lines), text/csv or application/json")
    raw = await read_body(request)
    specs: list[EntrySpec]
    if fmt == "json":
        specs = parse_entry_objects(schemas.parse_json(raw))
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Problem(400, f"the body is not UTF-8 text: byte {exc.start} is invalid") from None
        specs = parse_csv(text) if fmt == "csv" else parse_list_file(text, default_list)
    lists = context_of(request).services.lists
    added, present = await lists.import_specs(specs, actor=principal_of(request).actor)
    return web.json_response({"added": added, "already_present": present})


@requires("read")
async def export_entries(request: web.Request) -> web.StreamResponse:
    """Streamed a page of entries at a time, so its size is bounded by nothing but the lists and
    the memory it takes by one page. Should the store fail midway, the connection is cut
    before the final chunk: the client sees an incomplete answer, never a short one that looks
    whole."""
    schemas.only_params(request.query, {"format", "list", "learned"})
    fmt = request.query.get("format", "json")
    if fmt not in FORMATS_OUT:
        raise Problem(
            422,
            f"format: {fmt!r}: use postfix, rbldnsd, json or csv",
            errors=[{"field": "format", "problem": "unknown format"}],
        )
    list_ = schemas.list_param(request.query)
    learned = schemas.bool_param(request.query, "learned") is not False
    pieces = context_of(request).services.lists.export_pieces(fmt, list_, learned=learned)
    try:
        # The head and the first page before the status line: a store that is away is still a 503.
        first = await anext(pieces) + await anext(pieces)
        response = web.StreamResponse(headers={"Content-Type": f"{EXPORT_TYPES[fmt]}; charset=utf-8"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(first.encode())
        try:
            async for piece in pieces:
                await response.write(piece.encode())
        except StoreUnavailable as exc:
            log.warning("export to %s cut short: %s", request.remote, exc)
            if request.transport is not None:
                request.transport.abort()
            return response
        await response.write_eof()
        return response
    finally:
        await pieces.aclose()


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/v1/entries", entries_list)
    r.add_post("/v1/entries", entries_create)
    r.add_get("/v1/entries/{id}", entry_get)
    r.add_patch("/v1/entries/{id}", entry_patch)
    r.add_delete("/v1/entries/{id}", entry_delete)
    r.add_post("/v1/import", import_entries)
    r.add_get("/v1/export", export_entries)
