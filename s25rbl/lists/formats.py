"""List files in and out, for the CLI and the API alike: S25R-style Postfix regexp tables,
plain lines, CSV and JSON in; Postfix, rbldnsd, CSV and JSON out. Parsing collects every bad
line with its number; nothing is half-imported.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import json
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol

from s25rbl.errors import InvalidEntry, ListFileError
from s25rbl.lists.values import EntryKind, EntrySource, EntrySpec, ListName, guess_kind

FORMATS_IN = ("postfix", "csv", "json")  # postfix: a Postfix regexp table or plain lines
FORMATS_OUT = ("postfix", "rbldnsd", "json", "csv")


class StoredEntry(Protocol):
    """What the exporters read of a stored entry (the store's ``Entry`` row)."""

    @property
    def id(self) -> int: ...
    @property
    def list(self) -> ListName: ...
    @property
    def kind(self) -> EntryKind: ...
    @property
    def value(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def source(self) -> EntrySource: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def updated_at(self) -> datetime: ...
    @property
    def created_by(self) -> str: ...
    @property
    def expires_at(self) -> datetime | None: ...
    @property
    def hit_count(self) -> int: ...
    @property
    def last_hit_at(self) -> datetime | None: ...
    @property
    def starter_release(self) -> str | None: ...


# Which Postfix access(5) actions say what the client is. OK and PERMIT accept it: whitelist.
# REJECT, DEFER, DEFER_IF_* and 4xx/5xx codes refuse it or send it away: blacklist. Every other
# action (DUNNO, HOLD, DISCARD, WARN, FILTER, ...) decides what happens to a message, or
# nothing at all, and says nothing about the client: such a line is refused, never guessed.
_WHITE_ACTIONS = ("OK", "PERMIT")
_BLACK_ACTIONS = ("REJECT", "DEFER", "DEFER_IF_PERMIT", "DEFER_IF_REJECT")
_REFUSED_ACTIONS = frozenset(
    {"DUNNO", "HOLD", "DISCARD", "WARN", "FILTER", "REDIRECT", "PREPEND", "BCC", "INFO", "SHUTDOWN"}
)
_SMTP_CODE = re.compile(r"^[45][0-9][0-9]$")
ACTIONS = (
    f"{'/'.join(_WHITE_ACTIONS)} (whitelist) or {', '.join(_BLACK_ACTIONS)} or an SMTP 4xx/5xx "
    "code (blacklist)"
)


def _action_list(action: str) -> ListName | None:
    """The list an action puts its line on; None when ``action`` is no Postfix action at all.
    InvalidEntry for an action that says nothing about the client."""
    word = action.upper()
    if word in _WHITE_ACTIONS:
        return ListName.WHITE
    if word in _BLACK_ACTIONS or _SMTP_CODE.match(word):
        return ListName.BLACK
    if word in _REFUSED_ACTIONS:
        raise InvalidEntry(
            "action",
            f"{action!r} is not imported: it says what to do with a message, not whether the client "
            f"is trusted or refused; use {ACTIONS}",
        )
    return None


def _split_regexp(line: str) -> tuple[str, str]:
    """``/pattern/flags rest``: the pattern (delimiter escapes kept) and the rest."""
    delimiter = line[0]
    i = 1
    while i < len(line):
        if line[i] == "\\":
            i += 2
            continue
        if line[i] == delimiter:
            break
        i += 1
    else:
        raise InvalidEntry("pattern", f"no closing {delimiter} for the regular expression")
    pattern = line[1:i]
    rest = line[i + 1 :]
    flags = re.match(r"^[a-zA-Z]*", rest)
    assert flags is not None
    if set(flags.group(0)) - set("imx"):
        raise InvalidEntry("flags", f"unknown regexp flags {flags.group(0)!r}")
    return pattern, rest[flags.end() :].strip()


def parse_list_file(text: str, default_list: ListName | None) -> list[EntrySpec]:
    """Parse a Postfix regexp table (``/re/ OK``, ``/re/ 450 text``) or plain lines
    (``1.2.3.4``, ``192.0.2.0/24``, ``example.com``, optionally followed by an action).

    Raises ListFileError with every bad line when any line is bad.
    """
    specs: list[EntrySpec] = []
    errors: list[tuple[int, str]] = []
    seen: set[tuple[ListName, EntryKind, str]] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            spec = _parse_line(line, default_list)
        except InvalidEntry as exc:
            errors.append((number, str(exc)))
            continue
        key = (spec.list, spec.kind, spec.value)
        if key in seen:
            continue  # the same entry twice in one file is harmless
        seen.add(key)
        specs.append(spec)
    if errors:
        raise ListFileError(errors)
    return specs


def _parse_line(line: str, default_list: ListName | None) -> EntrySpec:
    lowered = line.lower()
    if lowered.startswith(("if ", "endif", "!")) or lowered == "if":
        raise InvalidEntry("line", "if/endif blocks and negated patterns are not supported; flatten them")
    if line[0] in "/":
        pattern, rest = _split_regexp(line)
        action, _, text = rest.partition(" ")
        if not action:
            raise InvalidEntry("action", f"a regexp line needs an action: {ACTIONS}")
        target = _action_list(action)
        if target is None:
            raise InvalidEntry("action", f"{action!r} is not a Postfix action; use {ACTIONS}")
        text = text.strip().removeprefix("#").strip()
        return EntrySpec.build(target, "regex", pattern, text or f"imported {action}")
    return _plain_line(line, default_list)


def _plain_line(line: str, default_list: ListName | None) -> EntrySpec:
    """``VALUE``, ``VALUE ACTION [text]`` (a Postfix access table line) or either followed by
    ``# reason``. Any other word after the value is refused: a line of prose must not become a
    domain entry named after its first word."""
    body, _, comment = line.partition("#")
    value, *more = body.split(None, 1)
    rest = more[0].strip() if more else ""
    words = rest.split(None, 1)
    action, text = [*words, "", ""][:2]
    target = default_list
    if action:
        target = _action_list(action)
        if target is None:
            raise InvalidEntry(
                "words",
                f"extra words after {value!r}: {rest!r}; a plain line is VALUE, VALUE ACTION [text] "
                f"(ACTION: {ACTIONS}), optionally followed by # reason",
            )
    if target is None:
        raise InvalidEntry("list", "a plain line needs an action (OK or REJECT) or --list white|black")
    reason = " ".join(part for part in (text.strip(), comment.strip()) if part)
    return EntrySpec.build(target, guess_kind(value), value, reason)


def parse_csv(text: str) -> list[EntrySpec]:
    """``list,kind,value[,reason]`` rows (a header row and ``#`` rows are skipped)."""
    errors: list[tuple[int, str]] = []
    specs: list[EntrySpec] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple[int, list[str]]] = []
    try:
        for row in reader:
            rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise ListFileError([(reader.line_num, f"not valid CSV: {exc}")]) from None
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
        raise ListFileError(errors)
    return specs


def parse_entry_objects(data: Any) -> list[EntrySpec]:
    """A decoded JSON import: an array of ``{list, kind, value, reason}`` objects. Other
    members (``id``, ``source`` ... as exported) are ignored, so an export imports again."""
    if not isinstance(data, list):
        raise ListFileError([(1, "a JSON import is an array of entry objects")])
    errors: list[tuple[int, str]] = []
    specs = []
    for i, item in enumerate(data, start=1):
        if not isinstance(item, dict):
            errors.append((i, "not an object"))
            continue
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
        raise ListFileError(errors)
    return specs


def parse_import(text: str, fmt: str, default_list: ListName | None) -> list[EntrySpec]:
    """Any import format (``FORMATS_IN``) to validated specs, all or nothing."""
    if fmt == "csv":
        return parse_csv(text)
    if fmt == "json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ListFileError([(exc.lineno, f"not valid JSON: {exc.msg}")]) from None
        return parse_entry_objects(data)
    return parse_list_file(text, default_list)


# --- export --------------------------------------------------------------------------------


_ERE_SPECIAL = frozenset(".[]()*+?{}|^$\\")


def _ere_escape(text: str) -> str:
    """Escape for POSIX extended regexps (Postfix regexp: tables): only the metacharacters."""
    return "".join("\\" + c if c in _ERE_SPECIAL else c for c in text)


def _regex_for(entry: StoredEntry) -> str | None:
    match entry.kind:
        case EntryKind.IP | EntryKind.HOSTNAME:
            return "^" + _ere_escape(entry.value) + "$"
        case EntryKind.DOMAIN:
            return "(^|\\.)" + _ere_escape(entry.value) + "$"
        case EntryKind.REGEX | EntryKind.RULE:
            return entry.value
    return None


def entry_dict(entry: StoredEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "list": entry.list.value,
        "kind": entry.kind.value,
        "value": entry.value,
        "reason": entry.reason,
        "source": entry.source.value,
        "created_at": entry.created_at.isoformat(),
        "updated_at": entry.updated_at.isoformat(),
        "created_by": entry.created_by,
        "expires_at": entry.expires_at.isoformat() if entry.expires_at else None,
        "hit_count": entry.hit_count,
        "last_hit_at": entry.last_hit_at.isoformat() if entry.last_hit_at else None,
        "starter_release": entry.starter_release,
    }


_BLACK_TEXT = "450 4.7.1 domain check, be patient"


class Export:
    """An export written piece by piece, so any number of entries costs a page of memory:
    ``begin()``, then ``rows(page)`` for each page of entries, then ``end()``. One of
    ``FORMATS_OUT``; rbldnsd holds the IPv4 addresses and networks of one list (default black).

    - postfix: a Postfix regexp table for ``check_client_access regexp:...``: OK for the
      whitelist, the S25R 450 text for the blacklist; CIDR entries as comments (use a cidr: table).
    - rbldnsd: an rbldnsd ``ip4set`` dataset.
    - json: an array of entry objects (``entry_dict``).
    - csv: ``list,kind,value,reason`` rows with a header: what ``parse_csv`` reads back.
    """

    def __init__(self, fmt: str, list_: ListName | None) -> None:
        if fmt not in FORMATS_OUT:
            raise InvalidEntry("format", f"{fmt!r}: use {', '.join(FORMATS_OUT)}")
        self.fmt = fmt
        self.list = (list_ or ListName.BLACK) if fmt == "rbldnsd" else list_
        self._count = 0
        self._skipped = 0
        self.left_out: dict[EntryKind, int] = {}  # rbldnsd: entries of kinds an ip4set cannot hold

    def begin(self) -> str:
        if self.fmt == "postfix":
            return "# s25rbl export: Postfix regexp table (case-insensitive)\n"
        if self.fmt == "rbldnsd":
            black = self.list is ListName.BLACK
            code = "127.0.0.3:domain check, be patient" if black else "127.0.0.2:whitelisted"
            head = f"# s25rbl export: rbldnsd ip4set of the {self.list}list\n"
            if self.left_out:
                head += f"# {left_out_line(self.left_out)}\n"
            return f"{head}:{code}\n"
        if self.fmt == "csv":
            return "list,kind,value,reason\r\n"
        return "["

    def rows(self, entries: Iterable[StoredEntry]) -> str:
        lines: list[str] = []
        if self.fmt == "postfix":
            for entry in entries:
                lines += _postfix_lines(entry)
        elif self.fmt == "rbldnsd":
            for entry in entries:
                if entry.list is not self.list or entry.kind not in (EntryKind.IP, EntryKind.CIDR):
                    continue
                net = ipaddress.ip_network(entry.value, strict=False)
                if net.version != 4:
                    self._skipped += 1
                    continue
                lines.append(str(net.network_address) if net.prefixlen == 32 else str(net))
        elif self.fmt == "csv":
            out = io.StringIO()
            writer = csv.writer(out)
            for e in entries:
                writer.writerow([e.list.value, e.kind.value, e.value, e.reason])
            return out.getvalue()
        else:
            for entry in entries:
                item = json.dumps(entry_dict(entry), indent=2).replace("\n", "\n  ")
                lines.append(("\n  " if self._count == 0 else ",\n  ") + item)
                self._count += 1
            return "".join(lines)
        return "".join(line + "\n" for line in lines)

    def end(self) -> str:
        if self.fmt == "rbldnsd" and self._skipped:
            return f"# {self._skipped} IPv6 entries left out (ip4set holds IPv4 only)\n"
        if self.fmt == "json":
            return "\n]\n" if self._count else "]\n"
        return ""


LEFT_OUT = "left out: "


def left_out_line(counts: dict[EntryKind, int]) -> str:
    """What an rbldnsd export could not hold, as its head says: ``left out: 3 regex, 1 domain
    entries (an ip4set holds IP addresses and networks only)``."""
    kinds = ", ".join(f"{n} {kind.value}" for kind, n in sorted(counts.items(), key=lambda kv: kv[0].value))
    return f"{LEFT_OUT}{kinds} entries (an ip4set holds IP addresses and networks only)"


def _postfix_lines(entry: StoredEntry) -> list[str]:
    action = "OK" if entry.list is ListName.WHITE else _BLACK_TEXT
    if entry.kind is EntryKind.RULE:
        action = "450 4.7.1 S25R check, be patient"
    lines = [f"# {entry.reason}"] if entry.reason else []
    pattern = _regex_for(entry)
    if pattern is None:
        lines.append(f"# cidr (use a cidr: table): {entry.value} {action}")
    else:
        escaped = pattern.replace("/", "\\/")
        lines.append(f"/{escaped}/ {action}")
    return lines


def export(entries: Iterable[StoredEntry], fmt: str, list_: ListName | None) -> str:
    """The entries in an export format (``FORMATS_OUT``), all at once."""
    out = Export(fmt, list_)
    return out.begin() + out.rows(entries) + out.end()
