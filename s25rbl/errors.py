"""The one exception hierarchy: every error that reaches a user names the bad input and what to do."""

from __future__ import annotations


class S25rblError(Exception):
    """Base class of every error s25rbl raises on purpose."""


class ConfigError(S25rblError):
    """A configuration key has a bad value; the message names the key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config: {key}: {problem}")
        self.key = key
        self.problem = problem


class InvalidEntry(S25rblError):
    """A list entry (IP, CIDR, hostname, domain, regex, reason, ...) is not acceptable."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class DuplicateEntry(S25rblError):
    """The same (list, kind, value) already exists."""


class EntryNotFound(S25rblError):
    """No entry with that id or value."""


class ImportError_(S25rblError):
    """A list file has bad lines; nothing of it was imported."""

    def __init__(self, errors: list[tuple[int, str]]) -> None:
        lines = "".join(f"\n  line {n}: {msg}" for n, msg in errors[:50])
        more = f"\n  ... and {len(errors) - 50} more" if len(errors) > 50 else ""
        super().__init__(f"nothing imported: {len(errors)} bad line(s){lines}{more}")
        self.errors = errors


class StoreUnavailable(S25rblError):
    """The database cannot be reached or used."""
