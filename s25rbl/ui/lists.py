"""Lists: search the entries in the store (in SQL, a page at a time, newest first), add, edit
and remove them, import a Postfix table and export; every write through the one write path."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.web_request import FileField

from s25rbl.api.guard import LARGE_BODY, accepts
from s25rbl.errors import InvalidEntry, ListFileError
from s25rbl.lists.formats import FORMATS_OUT, parse_list_file
from s25rbl.lists.values import EntryKind, EntrySource, EntrySpec, ListName, check_reason, parse_expiry
from s25rbl.store.entries import EntryFilter
from s25rbl.ui.base import (
    HOME,
    action,
    before_param,
    perform,
    principal_of,
    query_text,
    redirect,
    render,
    safe_return,
    session_of,
    text_field,
    view,
)
from s25rbl.ui.context import ui_of

PAGE = 50
MAX_IMPORT = 4 * 1024 * 1024  # characters of a pasted or uploaded table
EXPORT_NAMES = {"postfix": "txt", "rbldnsd": "txt", "json": "json", "csv": "csv"}
EXPORT_TYPES = {
    "postfix": "text/plain",
    "rbldnsd": "text/plain",
    "json": "application/json",
    "csv": "text/csv",
}


def _enum(value: str, enum: type[Any]) -> Any:
    try:
        return enum(value) if value else None
    except ValueError:
        return None


def _filters(request: web.Request) -> dict[str, Any]:
    return {
        "list": _enum(request.query.get("list", ""), ListName),
        "kind": _enum(request.query.get("kind", ""), EntryKind),
        "source": _enum(request.query.get("source", ""), EntrySource),
        "q": query_text(request, "q"),
    }


@view()
async def entries(request: web.Request) -> web.StreamResponse:
    f = _filters(request)
    flt = EntryFilter(list=f["list"], kind=f["kind"], source=f["source"], text=f["q"] or None)
    page = await ui_of(request).api.services.browse.entries(flt, before_id=before_param(request), limit=PAGE)
    return render(
        request,
        "lists.html",
        f=f,
        rows=page.rows,
        older=page.next_before,
        window_ended=page.window_ended,
        sizes=ui_of(request).api.lists.index.sizes(),
        lists=list(ListName),
        kinds=list(EntryKind),
        sources=list(EntrySource),
        formats=FORMATS_OUT,
        now=ui_of(request).api.services.clock.now(),
        form={},
    )


def _entry_id(request: web.Request) -> int:
    text = request.match_info["id"]
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise web.HTTPNotFound(text=f"No entry {text!r}.")
    return int(text)


@action()
async def add(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    services = ui_of(request).api.services

    async def do() -> str:
        spec = EntrySpec.build(
            text_field(form, "list", 8),
            text_field(form, "kind", 16),
            text_field(form, "value", 512),
            text_field(form, "reason", 300),
        )
        raw_expiry = text_field(form, "expires", 64).strip()
        expires = parse_expiry(raw_expiry, "expires", services.clock.now()) if raw_expiry else None
        entry = await services.lists.add_one(spec, actor=principal_of(request).actor, expires_at=expires)
        return f"Added {spec.list}list {spec.kind} {spec.value} (entry #{entry.id})."

    return await perform(request, text_field(form, "back", 2000) or f"{HOME}lists", do)


@view()
async def edit_form(request: web.Request) -> web.StreamResponse:
    entry = await ui_of(request).api.services.lists.get(_entry_id(request))
    back = safe_return(request.query.get("back"), f"{HOME}lists")
    return render(request, "entry_edit.html", entry=entry, back=back, error="")


@action()
async def edit(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    services = ui_of(request).api.services
    entry_id = _entry_id(request)
    back = safe_return(form.get("back"), f"{HOME}lists")
    try:
        reason = check_reason(text_field(form, "reason", 300))
        raw_expiry = text_field(form, "expires", 64).strip()
        expires = parse_expiry(raw_expiry, "expires", services.clock.now()) if raw_expiry else None
    except InvalidEntry as exc:
        entry = await services.lists.get(entry_id)
        return render(request, "entry_edit.html", status=422, entry=entry, back=back, error=str(exc))
    await services.lists.update(
        entry_id,
        actor=principal_of(request).actor,
        reason=reason,
        expires_at=expires,
        clear_expiry=expires is None and form.get("clear_expiry") == "1",
    )
    session_of(request).flash("ok", f"Entry #{entry_id} changed.")
    return redirect(back)


@action()
async def remove(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    lists = ui_of(request).api.services.lists
    entry_id = _entry_id(request)

    async def do() -> str:
        entry = await lists.remove(entry_id, actor=principal_of(request).actor)
        return f"Removed {entry.list}list {entry.kind} {entry.value} (entry #{entry_id})."

    return await perform(request, text_field(form, "back", 2000) or f"{HOME}lists", do)


@view()
async def import_form(request: web.Request) -> web.StreamResponse:
    return render(request, "import.html", errors=[], text="", default_list="")


@accepts(LARGE_BODY)  # a table of 100,000s of lines: up to api.max_body; other forms take 64 KiB
@action()
async def import_table(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    lists = ui_of(request).api.services.lists
    default_list = _enum(text_field(form, "list", 8), ListName)
    upload = form.get("file")
    text = text_field(form, "text", MAX_IMPORT)
    if isinstance(upload, FileField) and upload.filename:
        raw = upload.file.read(MAX_IMPORT + 1)
        if len(raw) > MAX_IMPORT:
            raise InvalidEntry("file", f"larger than {MAX_IMPORT // (1024 * 1024)} MiB")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidEntry("file", "is not UTF-8 text") from None
    values = {"text": text if len(text) < 200_000 else "", "default_list": default_list or ""}
    if not text.strip():
        return render(
            request, "import.html", status=422, errors=[(0, "paste a table or choose a file")], **values
        )
    try:
        specs = parse_list_file(text, default_list)
        added, present = await lists.import_specs(specs, actor=principal_of(request).actor)
    except ListFileError as exc:
        return render(request, "import.html", status=422, errors=exc.errors[:100], **values)
    session_of(request).flash("ok", f"Imported: {added} added, {present} already present.")
    return redirect(f"{HOME}lists")


@view()
async def export(request: web.Request) -> web.StreamResponse:
    fmt = request.query.get("format", "postfix")
    if fmt not in FORMATS_OUT:
        raise InvalidEntry("format", f"{fmt!r}: use {', '.join(FORMATS_OUT)}")
    list_ = _enum(request.query.get("list", ""), ListName)
    learned = request.query.get("learned", "true") != "false"
    text = await ui_of(request).api.services.lists.export(fmt, list_, learned=learned)
    name = f"s25rbl-{list_ or 'all'}list.{EXPORT_NAMES[fmt]}".replace("alllist", "lists")
    return web.Response(
        text=text,
        content_type=EXPORT_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/lists", entries)
    r.add_post("/lists/add", add)
    r.add_get("/lists/{id}/edit", edit_form)
    r.add_post("/lists/{id}/edit", edit)
    r.add_post("/lists/{id}/remove", remove)
    r.add_get("/import", import_form)
    r.add_post("/import", import_table)
    r.add_get("/export", export)
