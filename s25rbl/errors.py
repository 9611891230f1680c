"""The one exception hierarchy: every error that reaches a user names the bad input and what to do.

``exit_status`` is what the CLI exits with when the error ends a command: 1 the operation
failed, 2 bad usage or configuration.
"""

from __future__ import annotations

import os


class S25rblError(Exception):
    """Base class of every error s25rbl raises on purpose."""

    exit_status = 1


class ConfigError(S25rblError):
    """A configuration key has a bad value; the message names the key."""

    exit_status = 2

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config: {key}: {problem}")
        self.key = key
        self.problem = problem


class InvalidEntry(S25rblError):
    """A list entry (IP, CIDR, hostname, domain, regex, reason, ...) or another input is not
    acceptable; ``field`` names it."""

    exit_status = 2

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class DuplicateEntry(S25rblError):
    """The same (list, kind, value) already exists, or a decision was already taken."""


class EntryNotFound(S25rblError):
    """No entry (or suggestion, token, learned address) with that id or value."""


class ListFileError(S25rblError):
    """A list file has bad lines; nothing of it was imported."""

    def __init__(self, errors: list[tuple[int, str]]) -> None:
        lines = "".join(f"\n  line {n}: {msg}" for n, msg in errors[:50])
        more = f"\n  ... and {len(errors) - 50} more" if len(errors) > 50 else ""
        super().__init__(f"nothing imported: {len(errors)} bad line(s){lines}{more}")
        self.errors = errors


class StarterFormatError(S25rblError):
    """A malformed line of a starter whitelist file (``line`` counts from 1; 0: the whole file).
    In the file shipped with s25rbl it means a damaged installation: nothing of it is loaded."""

    def __init__(self, source: str, line: int, message: str) -> None:
        super().__init__(f"{source}, line {line}: {message}" if line else f"{source}: {message}")
        self.source = source
        self.line = line
        self.message = message


class StoreUnavailable(S25rblError):
    """The database cannot be reached or used."""


class ListenError(S25rblError):
    """A listening socket cannot be opened: the message names the service, protocol, address
    and port, and the system's reason (``Address already in use``)."""

    def __init__(self, what: str, host: str, port: int, exc: OSError) -> None:
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        # asyncio's servers wrap the system's reason in their own words: say the system's.
        reason = os.strerror(exc.errno) if exc.errno else (exc.strerror or str(exc))
        super().__init__(f"cannot listen on {where} ({what}): {reason}")
        self.errno = exc.errno


class StoreMissing(StoreUnavailable):
    """No store where the configuration points (no SQLite file, no schema): only ``serve`` and
    ``migrate`` create one."""


class ReportsLimited(S25rblError):
    """A reporter sent more reports than ``learning.reports_per_minute`` allows: nothing of the
    batch was taken; send it again after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Drop(S25rblError):
    """A DNS packet not worth an answer: too short to hold a header, or a response (QR set)."""


class ApiError(S25rblError):
    """The REST API answered a request with an HTTP error: status, then the problem's detail and
    each field's problem, one line each (``lines``)."""

    def __init__(
        self, lines: list[str], status: int, *, retry_after: float | None = None, location: str = ""
    ) -> None:
        super().__init__("\n  ".join(lines))
        self.lines = lines
        self.status = status
        self.retry_after = retry_after
        self.location = location
        self.exit_status = 2 if status in (400, 413, 415, 422) else 1


class ApiUnreachable(S25rblError):
    """The REST API could not be reached at all (connection refused, timeout, DNS)."""


class ReporterError(S25rblError):
    """The log reporter cannot go on: a configuration error (bad token, scope or URL)."""

    def __init__(self, message: str, exit_status: int = 1) -> None:
        super().__init__(message)
        self.exit_status = exit_status


class ReportsDeferred(S25rblError):
    """The API cannot take a batch of reports now; the reporter tries again later."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BatchRefused(S25rblError):
    """The API refused a batch of reports as a whole (400/413/415/422): resending cannot help."""


class StateError(S25rblError):
    """The reporter's state file cannot be used (locked by another reporter, not writable)."""


class PolicyRequestError(S25rblError):
    """A policy-delegation request s25rbl cannot judge (garbage, no or a bad client address);
    it is answered DUNNO. ``kind`` names the problem for the counters."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
