"""The starter whitelist, read from the shipped ``starter_whitelist.tsv`` data file.

The file is UTF-8, one entry per line, four TAB-separated columns: ``domain`` (a lower-case
DNS name, matched as a domain suffix on label boundaries), ``since`` (the s25rbl release that
added it), ``reason`` (at most 200 characters) and ``example`` (an outbound hostname of the pool
that an S25R rule hits, or empty). ``#`` starts a comment line, ``## Title`` starts a group and
blank lines are ignored. A malformed line is refused with its line number; nothing is skipped.
A store gets these entries through ``service.starter``, each release's new ones on upgrade.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from s25rbl.errors import InvalidEntry, StarterFormatError

STARTER_FILE = "starter_whitelist.tsv"
COLUMNS = ("domain", "since", "reason", "example")
MAX_REASON = 200

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_RELEASE = re.compile(r"[0-9]{1,4}\.[0-9]{1,4}\.[0-9]{1,4}")


@dataclass(frozen=True, slots=True)
class StarterEntry:
    """One starter whitelist entry and the ``## group`` it was listed under."""

    domain: str
    since: str
    reason: str
    example: str
    group: str

    def covers(self, hostname: str) -> bool:
        """Whether the domain matches ``hostname`` as a suffix on a label boundary, as lists do."""
        name = hostname.strip().lower().removesuffix(".")
        return name == self.domain or name.endswith("." + self.domain)


def check_release(text: str, field: str) -> str:
    """A release number as the ``since`` column has it (``0.2.0``), or InvalidEntry naming ``field``."""
    if not _RELEASE.fullmatch(text):
        raise InvalidEntry(field, f"{text[:40]!r} is not a release number like 0.2.0")
    return text


def is_hostname(name: str) -> bool:
    """A lower-case DNS name of two or more LDH labels, without a trailing dot."""
    labels = name.split(".")
    return len(name) <= 253 and len(labels) >= 2 and all(_LABEL.fullmatch(label) for label in labels)


def load_starter(path: str | Path | None = None) -> tuple[StarterEntry, ...]:
    """The entries of ``path``, or of the file shipped with this package when None.

    A shipped file that cannot be read or parsed means a damaged installation; the error says
    so and what to do, because it stops whatever command was setting up the store.
    """
    if path is not None:
        return parse_starter(Path(path).read_text(encoding="utf-8-sig"), str(path))
    shipped = resources.files("s25rbl.lists").joinpath(STARTER_FILE)
    source = f"the starter whitelist shipped with s25rbl ({shipped})"
    damaged = "reinstall s25rbl, or set lists.builtin_whitelist = false to start without it"
    try:
        text = shipped.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise StarterFormatError(source, 0, f"cannot be read ({exc}); {damaged}") from None
    try:
        return parse_starter(text, source)
    except StarterFormatError as exc:
        raise StarterFormatError(source, exc.line, f"{exc.message}; {damaged}") from None


def parse_starter(text: str, source: str = "<starter whitelist>") -> tuple[StarterEntry, ...]:
    """Every entry of ``text``, in file order; StarterFormatError names the first bad line."""
    entries: list[StarterEntry] = []
    first_seen: dict[str, int] = {}
    group = ""
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("##"):
            group = line[2:].strip()
            if not group:
                raise StarterFormatError(source, number, "a group line needs a title: '## Title'")
            continue
        if not line.strip() or line.startswith("#"):
            continue
        try:
            entry = _entry(line, group)
        except ValueError as exc:
            raise StarterFormatError(source, number, str(exc)) from None
        first = first_seen.get(entry.domain)
        if first is not None:
            message = f"duplicate domain {entry.domain!r} (first on line {first})"
            raise StarterFormatError(source, number, message)
        first_seen[entry.domain] = number
        entries.append(entry)
    return tuple(entries)


def _entry(line: str, group: str) -> StarterEntry:
    """One entry line under ``group``; ValueError says what is wrong with it."""
    fields = line.split("\t")
    if len(fields) != len(COLUMNS):
        raise ValueError(f"expected {len(COLUMNS)} TAB-separated columns {COLUMNS}, found {len(fields)}")
    domain, since, reason, example = fields
    if not is_hostname(domain):
        raise ValueError(f"domain {domain!r} is not a lower-case DNS name of two or more labels")
    if not _RELEASE.fullmatch(since):
        raise ValueError(f"since {since!r} is not a release number like 0.2.0")
    if not reason or reason != reason.strip() or len(reason) > MAX_REASON:
        raise ValueError(f"reason must be 1 to {MAX_REASON} characters, without surrounding blanks")
    if not group:
        raise ValueError("entry before the first '## Group' line")
    entry = StarterEntry(domain, since, reason, example, group)
    if example and not (is_hostname(example) and entry.covers(example)):
        raise ValueError(f"example {example!r} is not a hostname under {domain!r}")
    return entry
