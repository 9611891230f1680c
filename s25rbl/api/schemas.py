"""Request validation: strict (unknown fields refused), every error naming its field."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from aiohttp import web

from s25rbl.api.guard import read_body
from s25rbl.api.problems import Problem
from s25rbl.errors import InvalidEntry
from s25rbl.lists.starter import check_release
from s25rbl.lists.values import EntryKind, EntrySource, EntrySpec, ListName, check_reason, parse_expiry
from s25rbl.store.entries import EntryFilter

MAX_BATCH = 1000
MAX_PAGE = 1000
ENTRY_FIELDS = {"list", "kind", "value", "reason", "expires_at"}
PATCH_FIELDS = {"reason", "expires_at"}
MAX_DEPTH = 32  # the API's bodies nest 3 deep; anything deeper is refused
MAX_NUMBER = 40  # characters of one number literal: int64 and doubles fit; 5,000 digits do not


def _number(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(literal: str) -> Any:
        if len(literal) > MAX_NUMBER:
            raise Problem(400, f"the body is not acceptable JSON: a number of {len(literal)} characters")
        value = kind(literal)
        if value in (float("inf"), float("-inf")):
            raise Problem(400, f"the body is not acceptable JSON: {literal} is out of range")
        return value

    return parse


def _constant(name: str) -> Any:
    raise Problem(400, f"the body is not valid JSON: {name} is not a JSON value")


def _members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise Problem(400, f"the body is not acceptable JSON: {key!r} twice in one object")
            seen.add(key)
    return members


def _check_tree(value: Any, path: str, depth: int) -> None:
    """Depth, and text that cannot be stored: a lone UTF-16 surrogate (``"\\ud800"``) is valid
    JSON syntax but not text; no database driver can encode it."""
    if depth > MAX_DEPTH:
        raise Problem(400, f"the body is not acceptable JSON: it nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                field = path or "body"
                problem = "contains a lone UTF-16 surrogate; send Unicode text"
                raise Problem(
                    400, f"{field}: {problem}", errors=[{"field": field, "problem": problem}]
                ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_tree(key, path or "body", depth + 1)
            _check_tree(item, f"{path}.{key}" if path else str(key), depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_tree(item, f"{path}[{i}]", depth + 1)


def parse_json(raw: bytes) -> Any:
    """A request body as I-JSON (RFC 7493): UTF-8, no duplicate members, no lone surrogates, and
    bounded: at most ``MAX_DEPTH`` levels, numbers of at most ``MAX_NUMBER`` characters. Anything
    else is a 400 naming the problem, before any route logic runs."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Problem(400, f"the body is not UTF-8: byte {exc.start} is invalid") from None
    try:
        value = json.loads(
            text,
            parse_int=_number(int),
            parse_float=_number(float),
            parse_constant=_constant,
            object_pairs_hook=_members,
        )
    except json.JSONDecodeError as exc:
        raise Problem(400, f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        # The parser ran out of stack long before memory: far deeper than MAX_DEPTH anyway.
        raise Problem(
            400, f"the body is not acceptable JSON: it nests deeper than {MAX_DEPTH} levels"
        ) from None
    _check_tree(value, "", 0)
    return value


async def read_json(request: web.Request) -> Any:
    """The JSON body of a request, within the route's body limit (413 beyond), as ``parse_json``."""
    if request.content_type != "application/json":
        raise Problem(415, f"send application/json, not {request.content_type or 'no content type'}")
    return parse_json(await read_body(request))


def _invalid(field: str, problem: str) -> Problem:
    return Problem(422, f"{field}: {problem}", errors=[{"field": field, "problem": problem}])


def _unknown(body: Mapping[str, Any], allowed: set[str], prefix: str = "") -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise Problem(
            422,
            f"unknown field(s): {', '.join(prefix + e for e in extra)}",
            errors=[{"field": prefix + e, "problem": "unknown field"} for e in extra],
        )


def expiry(value: Any, field: str, now: datetime) -> datetime | None:
    """An ``expires_at`` member: null, or what ``lists.values.parse_expiry`` accepts."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise _invalid(field, "must be an ISO 8601 date-time string or null")
    try:
        return parse_expiry(value, field, now)
    except InvalidEntry as exc:
        raise _invalid(field, exc.problem) from None


def entry_spec(body: Any, now: datetime, prefix: str = "") -> tuple[EntrySpec, datetime | None]:
    if not isinstance(body, dict):
        raise _invalid(prefix.rstrip(".") or "body", "must be a JSON object")
    _unknown(body, ENTRY_FIELDS, prefix)
    for field in ("list", "kind", "value"):
        if field not in body:
            raise _invalid(prefix + field, "is required")
        if not isinstance(body[field], str):
            raise _invalid(prefix + field, "must be a string")
    reason = body.get("reason", "")
    if not isinstance(reason, str):
        raise _invalid(prefix + "reason", "must be a string")
    try:
        spec = EntrySpec.build(body["list"], body["kind"], body["value"], reason)
    except InvalidEntry as exc:
        raise _invalid(prefix + exc.field, exc.problem) from None
    return spec, expiry(body.get("expires_at"), prefix + "expires_at", now)


def entry_batch(body: Any, now: datetime) -> tuple[list[tuple[EntrySpec, datetime | None]], bool]:
    """One entry object, or ``{"entries": [...]}``. Returns the specs and whether it was a batch."""
    if isinstance(body, dict) and "entries" in body:
        _unknown(body, {"entries"})
        items = body["entries"]
        if not isinstance(items, list) or not items:
            raise _invalid("entries", "must be a non-empty array")
        if len(items) > MAX_BATCH:
            raise Problem(413, f"at most {MAX_BATCH} entries per request; got {len(items)}")
        specs = [entry_spec(item, now, f"entries[{i}].") for i, item in enumerate(items)]
        seen: set[tuple[str, str, str]] = set()
        for i, (spec, _) in enumerate(specs):
            key = (spec.list, spec.kind, spec.value)
            if key in seen:
                raise _invalid(f"entries[{i}]", f"the same {spec.kind} {spec.value!r} twice in one batch")
            seen.add(key)
        return specs, True
    return [entry_spec(body, now)], False


def entry_patch(body: Any, now: datetime) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _invalid("body", "must be a JSON object")
    _unknown(body, PATCH_FIELDS)
    if not body:
        raise _invalid("body", "give reason and/or expires_at")
    change: dict[str, Any] = {}
    if "reason" in body:
        if not isinstance(body["reason"], str):
            raise _invalid("reason", "must be a string")
        try:
            change["reason"] = check_reason(body["reason"])
        except InvalidEntry as exc:
            raise _invalid("reason", exc.problem) from None
    if "expires_at" in body:
        change["expires_at"] = expiry(body["expires_at"], "expires_at", now)
        change["clear_expiry"] = body["expires_at"] is None
    return change


def only_params(query: Mapping[str, str], allowed: set[str]) -> None:
    extra = sorted(set(query) - allowed)
    if extra:
        raise _invalid(extra[0], "unknown query parameter")


def _enum_param(query: Mapping[str, str], name: str, enum: type[Any]) -> Any:
    value = query.get(name)
    if value is None:
        return None
    try:
        return enum(value)
    except ValueError:
        allowed = ", ".join(m.value for m in enum)
        raise _invalid(name, f"{value!r}: use one of {allowed}") from None


def int_param(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    value = query.get(name)
    if value is None:
        return default
    # isascii: str.isdigit() is true for "²", which int() refuses; ids are ASCII digits.
    # len: int() refuses more than 4,300 digits, and nothing here needs more than 19.
    if not (value.isascii() and value.isdigit() and len(value) <= 19) or not low <= int(value) <= high:
        raise _invalid(name, f"{value!r}: a whole number from {low} to {high}")
    return int(value)


def page_params(query: Mapping[str, str]) -> tuple[int, int]:
    """Cursor pagination: (the id to continue after, the page size)."""
    return int_param(query, "cursor", 0, 0, 2**62), int_param(query, "limit", 100, 1, MAX_PAGE)


def page(rows: Sequence[Any], limit: int, item: Callable[[Any], Any]) -> dict[str, Any]:
    """A page of ``limit`` items from ``limit + 1`` rows fetched; the cursor when more follow."""
    next_cursor = str(rows[limit - 1].id) if len(rows) > limit else None
    return {"items": [item(row) for row in rows[:limit]], "next_cursor": next_cursor}


def bool_param(query: Mapping[str, str], name: str) -> bool | None:
    value = query.get(name)
    if value is None:
        return None
    if value not in ("true", "false"):
        raise _invalid(name, f"{value!r}: use true or false")
    return value == "true"


def entry_filter(query: Mapping[str, str]) -> tuple[EntryFilter, bool | None]:
    allowed = {"list", "kind", "source", "starter_release", "q", "expired", "cursor", "limit"}
    extra = sorted(set(query) - allowed)
    if extra:
        raise _invalid(extra[0], "unknown query parameter")
    text = query.get("q")
    if text is not None and len(text) > 200:
        raise _invalid("q", "at most 200 characters")
    expired = bool_param(query, "expired")
    release = query.get("starter_release")
    if release is not None:
        try:
            check_release(release, "starter_release")
        except InvalidEntry as exc:
            raise field_problem(exc) from None
    return (
        EntryFilter(
            list=_enum_param(query, "list", ListName),
            kind=_enum_param(query, "kind", EntryKind),
            source=_enum_param(query, "source", EntrySource),
            text=text or None,
            include_expired=expired is not False,
            only_expired=expired is True,
            starter_release=release,
        ),
        expired,
    )


def list_param(query: Mapping[str, str]) -> ListName | None:
    value: ListName | None = _enum_param(query, "list", ListName)
    return value


def path_id(request: web.Request, what: str) -> int:
    """The ``{id}`` of the path; anything but a plain ASCII number is simply not found."""
    text = request.match_info["id"]
    # isascii: str.isdigit() is true for "²", which int() refuses.
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise Problem(404, f"no {what} with id {text!r}")
    return int(text)


def field_problem(exc: InvalidEntry, field: str | None = None) -> Problem:
    """An InvalidEntry as a 422 naming ``field`` (default: the one the error names)."""
    name = field or exc.field
    return Problem(422, f"{name}: {exc.problem}", errors=[{"field": name, "problem": exc.problem}])
