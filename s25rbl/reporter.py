"""``s25rbl report-maillog``: send the temporary rejections our zones caused to ``POST /v1/reports``.

It reads a Postfix mail log (a path, or ``-`` for standard input), picks out the smtpd lines

    NOQUEUE: reject: RCPT from NAME[IP]: 450 4.7.1 ... blocked using ZONE; ...;
        from=<S> to=<R> proto=P helo=<H>      (all on one line)

whose ZONE is one of ours (``--zone``, default the configured blocklist and hostname zones), and
sends them in batches. Each report's idempotency key is derived from its log line, so a line
read again after a restart, or a batch sent again after an outage, is never counted twice.
A log with no position in the state file yet is read from its beginning, or with ``--from-end``
from its current end (that position saved at once); a saved position always wins.

Timestamps: classic syslog (``Nov 23 21:50:01``, optionally with ``.uuuuuu``: no year, so the
current year, or the previous one if that would put the line more than a day in the future;
the machine's local time zone unless ``--utc``) and RFC 3339 (``2026-11-23T21:50:01.123456+00:00``,
rsyslog's high-precision format, journalctl ``-o short-iso``).

Every other line is counted by category (ignored 5xx, not ours, not a rejection, unparsable),
never fatal. While the API is unavailable (5xx, 429, timeouts, connection refused) the same
batch is retried with capped exponential backoff and jitter; the state file only advances past
lines whose reports the API accepted (see ``s25rbl.reporter_state``). 401/403/404 are
configuration errors (exit 1); 400/413/415/422 mean a bug here: the batch is logged and
skipped, never retried forever.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import ipaddress
import json
import logging
import os
import queue
import random
import re
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, TextIO

from s25rbl.config import Settings, default_state_dir, parse_zone
from s25rbl.errors import InvalidEntry, S25rblError
from s25rbl.remote import problem_text
from s25rbl.reporter_state import MAX_LINE, LogFile, Position, StateFile

log = logging.getLogger("s25rbl.reporter")

MAX_BATCH = 1000  # the API's limit per request
KEY_LENGTH = 64

# --- parsing --------------------------------------------------------------------------------

_MONTHS = {m: i for i, m in enumerate(("Jan", "Feb", "Mar", "Apr", "May", "Jun"), 1)} | {
    m: i for i, m in enumerate(("Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 7)
}
_CLASSIC = re.compile(
    r"(?P<mon>[A-Z][a-z]{2}) {1,2}(?P<day>\d{1,2}) (?P<h>\d\d):(?P<m>\d\d):(?P<s>\d\d)(?P<frac>\.\d{1,6})? "
    r"(?P<rest>.*)",
    re.DOTALL,
)
_RFC3339 = re.compile(
    r"(?P<ts>\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)) (?P<rest>.*)", re.DOTALL
)
# "host program[pid]: message"; Postfix programs are "postfix/smtpd", "postfix-out/smtpd",
# "postfix/submission/smtpd" (syslog_name) ...
_TAG = re.compile(r"(?P<host>\S+) (?P<prog>[^\s\[\]:]+)(?:\[(?P<pid>\d+)\])?: (?P<msg>.*)", re.DOTALL)
_REJECT = re.compile(
    r"(?P<qid>NOQUEUE|[0-9A-Za-z]+): reject: (?P<stage>[A-Z]+) from "
    r"(?P<name>[^\s\[\]]*)\[(?P<ip>[^\s\[\]]+)\](?::\d+)?: (?P<code>\d{3})(?P<reply> .*)",
    re.DOTALL,
)
_BLOCKED = re.compile(r"blocked using (?P<zone>[A-Za-z0-9._-]+)", re.IGNORECASE)


class Kind(StrEnum):
    REPORT = "report"
    IGNORED_5XX = "ignored 5xx"
    NOT_OURS = "not ours"
    NOT_REJECT = "not a rejection"
    UNPARSABLE = "unparsable"


@dataclass(frozen=True, slots=True)
class Rejection:
    """One temporary rejection by one of our zones, as the API takes it."""

    client_ip: str
    client_name: str
    helo: str
    sender: str
    recipient: str
    time: datetime
    zone: str
    code: int
    idempotency_key: str

    def report(self) -> dict[str, str]:
        return {
            "client_ip": self.client_ip,
            "client_name": self.client_name,
            "helo": self.helo,
            "sender": self.sender,
            "recipient": self.recipient,
            "time": self.time.astimezone(UTC).isoformat(),
            "idempotency_key": self.idempotency_key,
        }


@dataclass(frozen=True, slots=True)
class Parsed:
    kind: Kind
    rejection: Rejection | None = None
    why: str = ""


def split_tail(reply: str) -> tuple[str, str, str] | None:
    """(sender, recipient, helo) from the end of smtpd's log_whatsup() text:
    ``...; from=<S> to=<R> proto=P helo=<H>`` (helo only once given).

    Sender, recipient and HELO come from the client and may contain anything, the separators
    too; the split takes the first ``; from=<``, the last ``> proto=`` that ends the line
    properly, and the last ``> to=<`` before it. Plain string searches: linear time whatever the
    line holds (a backtracking regex took seconds on a crafted line).
    """
    start = reply.find("; from=<")
    if start < 0:
        return None
    rest = reply[start + len("; from=<") :]
    end = len(rest)
    for _ in range(3):
        proto_at = rest.rfind("> proto=", 0, end)
        if proto_at < 0:
            return None
        after = rest[proto_at + len("> proto=") :]
        proto, _, helo_part = after.partition(" ")
        if proto and (not helo_part or (helo_part.startswith("helo=<") and helo_part.endswith(">"))):
            to_at = rest.rfind("> to=<", 0, proto_at)
            if to_at < 0:
                return None
            helo = helo_part[len("helo=<") : -1] if helo_part else ""
            return rest[:to_at], rest[to_at + len("> to=<") : proto_at], helo
        end = proto_at
    return None


def idempotency_key(raw: bytes) -> str:
    """The key of the report of one log line: the same line always gives the same key; two
    rejections differ at least in time, pid, queue id, client, sender or recipient."""
    return hashlib.sha256(raw.rstrip(b"\r\n")).hexdigest()[:KEY_LENGTH]


class LineParser:
    """Classifies Postfix log lines and extracts the rejections caused by ``zones``.

    ``tz``: the zone of classic syslog timestamps (None: the machine's local time zone).
    ``now``: the current time, for the year of classic timestamps.
    """

    def __init__(
        self,
        zones: Iterable[str],
        *,
        tz: tzinfo | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.zones = frozenset(z.lower().rstrip(".") for z in zones)
        self.tz = tz
        self.now = now

    def parse(self, raw: bytes) -> Parsed:
        if len(raw) >= MAX_LINE:
            return Parsed(Kind.UNPARSABLE, why="line too long")
        line = raw.rstrip(b"\r\n").decode("utf-8", errors="replace")
        if not line.strip():
            return Parsed(Kind.NOT_REJECT, why="empty line")
        stamp, rest = self._split_time(line)
        if rest is None:
            return Parsed(Kind.UNPARSABLE, why="no syslog timestamp")
        tag = _TAG.fullmatch(rest)
        if tag is None:
            return Parsed(Kind.UNPARSABLE, why="no 'host program[pid]:' after the timestamp")
        if tag["prog"].rsplit("/", 1)[-1] != "smtpd":
            return Parsed(Kind.NOT_REJECT, why=f"{tag['prog']} line")
        reject = _REJECT.fullmatch(tag["msg"])
        if reject is None:
            return Parsed(Kind.NOT_REJECT, why="not a reject line")
        blocked = _BLOCKED.search(reject["reply"])
        zone = blocked["zone"].lower().rstrip(".") if blocked else ""
        if zone not in self.zones:
            return Parsed(Kind.NOT_OURS, why=f"blocked using {zone}" if zone else "not a DNSBL rejection")
        code = int(reject["code"])
        if 500 <= code <= 599:
            return Parsed(Kind.IGNORED_5XX, why=f"{code}: a permanent rejection")
        if not 400 <= code <= 499:
            return Parsed(Kind.UNPARSABLE, why=f"reply code {code}")
        if reject["stage"] != "RCPT":
            return Parsed(Kind.UNPARSABLE, why=f"rejected at {reject['stage']}: no sender and recipient")
        tail = split_tail(reject["reply"])
        if tail is None:
            return Parsed(Kind.UNPARSABLE, why="no 'from=<...> to=<...> proto=...' at the end")
        sender, recipient, helo = tail
        try:
            ip = ipaddress.ip_address(reject["ip"]).compressed
        except ValueError:
            return Parsed(Kind.UNPARSABLE, why=f"{reject['ip']!r} is not an IP address")
        when = self._time(stamp)
        if when is None:
            return Parsed(Kind.UNPARSABLE, why="bad timestamp")
        rejection = Rejection(
            client_ip=ip,
            client_name=reject["name"] or "unknown",
            helo=helo,
            sender=sender,
            recipient=recipient,
            time=when,
            zone=zone,
            code=code,
            idempotency_key=idempotency_key(raw),
        )
        return Parsed(Kind.REPORT, rejection)

    def _split_time(self, line: str) -> tuple[re.Match[str] | None, str | None]:
        for pattern in (_RFC3339, _CLASSIC):
            match = pattern.fullmatch(line)
            if match is not None:
                return match, match["rest"]
        return None, None

    def _time(self, stamp: re.Match[str] | None) -> datetime | None:
        if stamp is None:
            return None
        if "ts" in stamp.groupdict():
            try:
                when = datetime.fromisoformat(stamp["ts"].replace("Z", "+00:00"))
            except ValueError:
                return None
            return when if when.tzinfo is not None else None
        now = self.now()
        micro = int((stamp["frac"] or ".0")[1:].ljust(6, "0"))
        fields = (_MONTHS.get(stamp["mon"], 0), int(stamp["day"]), int(stamp["h"]), int(stamp["m"]))
        for year in (now.year + 1, now.year, now.year - 1):
            # Next year too: a log written in another time zone around New Year's Eve.
            try:
                naive = datetime(year, *fields, int(stamp["s"]), micro)
            except ValueError:
                continue
            when = naive.replace(tzinfo=self.tz) if self.tz is not None else naive.astimezone()
            if when <= now + timedelta(days=1):
                return when
        return None


# --- counting -------------------------------------------------------------------------------


@dataclass
class Counts:
    lines: int = 0
    kinds: Counter[Kind] = field(default_factory=Counter)
    accepted: int = 0
    duplicate: int = 0
    refused: int = 0
    dropped: int = 0  # in batches the API rejected as malformed (a bug): logged, skipped

    def summary(self, pending: int = 0) -> str:
        k = self.kinds
        sent = f"{self.accepted} accepted, {self.duplicate} duplicate, {self.refused} refused"
        if self.dropped:
            sent += f", {self.dropped} dropped"
        if pending:
            sent += f", {pending} unsent"
        return (
            f"{self.lines} lines: {k[Kind.REPORT]} rejections reported ({sent}); "
            f"{k[Kind.IGNORED_5XX]} ignored 5xx, {k[Kind.NOT_OURS]} not ours, "
            f"{k[Kind.NOT_REJECT]} not rejections, {k[Kind.UNPARSABLE]} unparsable"
        )


# --- the API client -------------------------------------------------------------------------


class ReporterError(S25rblError):
    """The reporter cannot go on: a configuration error (bad token, scope or URL)."""

    def __init__(self, message: str, exit_status: int = 1) -> None:
        super().__init__(message)
        self.exit_status = exit_status


class Unavailable(Exception):
    """The API cannot take the batch now; try again later."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class BadBatch(Exception):
    """The API refused the batch as a whole (400/413/415/422): a bug; resending cannot help."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a POST must not silently turn into a GET elsewhere


class ReportsClient:
    """``POST /v1/reports`` with urllib, like ``s25rbl.remote``."""

    def __init__(self, base: str, token: str, timeout: float = 30.0) -> None:
        if not base.startswith(("http://", "https://")):
            raise ReporterError(f"--api {base!r}: give a URL such as http://127.0.0.1:8300", 2)
        self.url = base.rstrip("/") + "/v1/reports"
        self.token = token
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirect)

    def send(self, reports: list[dict[str, str]], timeout: float | None = None) -> dict[str, Any]:
        body = json.dumps({"reports": reports}, ensure_ascii=False).encode()
        request = urllib.request.Request(self.url, data=body, method="POST")
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Content-Type", "application/json")
        request.add_header("Accept", "application/json")
        try:
            with self._opener.open(request, timeout=timeout or self.timeout) as response:
                data = response.read()
        except urllib.error.HTTPError as exc:
            raise self._error(exc) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise Unavailable(f"cannot reach {self.url} ({reason})") from None
        try:
            result = json.loads(data)
        except ValueError:
            result = None
        if not isinstance(result, dict):
            log.warning(
                "%s: answer %r is not the expected JSON object; the batch counts as accepted",
                self.url,
                data[:200],
            )
            return {"accepted": len(reports), "duplicate": 0, "refused": 0, "errors": []}
        return result

    def _error(self, exc: urllib.error.HTTPError) -> Exception:
        text = problem_text(exc, separator="; ", limit=10)
        code = exc.code
        if code in (401, 403):
            what = "token" if code == 401 else "token's scope (it needs 'report')"
            return ReporterError(f"{self.url}: the API refused the {what}: {text}")
        if code == 404:
            return ReporterError(f"{self.url}: not found ({text}): check --api / S25RBL_API_URL")
        if 300 <= code < 400:
            where = exc.headers.get("Location", "?")
            return ReporterError(f"{self.url}: redirected to {where}: give the API's own URL")
        if code in (408, 425, 429) or code >= 500:
            return Unavailable(f"{self.url}: {text}", _retry_after(exc.headers.get("Retry-After")))
        return BadBatch(text)


def _retry_after(value: str | None) -> float | None:
    if value and value.strip().isdigit():
        return float(value.strip())
    return None


# --- sources --------------------------------------------------------------------------------


class Sender(Protocol):
    """What the loop needs of a client (``ReportsClient``; tests use fakes)."""

    timeout: float

    def send(self, reports: list[dict[str, str]], timeout: float | None = None) -> dict[str, Any]: ...


class Source(Protocol):
    def read_line(self) -> bytes | None: ...
    def finished(self) -> bool: ...
    def wait(self, seconds: float, stop: threading.Event) -> None: ...
    def where(self) -> tuple[int, int, int] | None: ...
    def position(self) -> Position | None: ...
    def close(self) -> None: ...


class FileSource:
    def __init__(self, logfile: LogFile) -> None:
        self.logfile = logfile

    def read_line(self) -> bytes | None:
        return self.logfile.read_line()

    def finished(self) -> bool:
        return self.logfile.finished()

    def wait(self, seconds: float, stop: threading.Event) -> None:
        stop.wait(seconds)

    def where(self) -> tuple[int, int, int] | None:
        f = self.logfile
        return (f.device, f.inode, f.offset) if f.fh is not None else None

    def position(self) -> Position | None:
        return self.logfile.position()

    def close(self) -> None:
        self.logfile.close()


class StdinSource:
    """Standard input, read by a thread so that a quiet pipe does not hold back a batch."""

    _EOF = b""

    def __init__(self, stream: Any) -> None:
        self._queue: queue.Queue[bytes] = queue.Queue(maxsize=10_000)
        self._next: bytes | None = None
        self._eof = False
        thread = threading.Thread(target=self._pump, args=(stream,), daemon=True, name="stdin")
        thread.start()

    def _pump(self, stream: Any) -> None:
        try:
            while True:
                line = stream.readline(MAX_LINE)
                if not line:
                    break
                if not line.endswith(b"\n") and len(line) >= MAX_LINE:
                    self._queue.put(line)  # counted unparsable; drop the rest of the line
                    while (rest := stream.readline(MAX_LINE)) and not rest.endswith(b"\n"):
                        pass
                    continue
                self._queue.put(line.rstrip(b"\r\n") + b"\n")
        finally:
            self._queue.put(self._EOF)

    def read_line(self) -> bytes | None:
        if self._next is None:
            try:
                self._next = self._queue.get_nowait()
            except queue.Empty:
                return None
        item, self._next = self._next, None
        if item == self._EOF:
            self._eof = True
            return None
        return item.rstrip(b"\r\n") if item.endswith(b"\n") else item

    def finished(self) -> bool:
        return self._eof

    def wait(self, seconds: float, stop: threading.Event) -> None:
        if self._next is None and not self._eof:
            with contextlib.suppress(queue.Empty):
                self._next = self._queue.get(timeout=seconds)

    def where(self) -> None:
        return None

    def position(self) -> None:
        return None

    def close(self) -> None:
        pass


# --- the loop -------------------------------------------------------------------------------


@dataclass
class Options:
    batch: int = 500
    interval: float = 2.0
    poll: float = 1.0
    follow: bool = False
    stats_interval: float = 900.0
    backoff_min: float = 1.0
    backoff_max: float = 60.0
    grace: float = 5.0
    state_save_interval: float = 1.0


class Reporter:
    """Reads, batches, sends, and remembers what is done."""

    def __init__(
        self,
        parser: LineParser,
        client: Sender,
        source: Source,
        state: StateFile | None,
        state_key: str,
        options: Options,
        stop: threading.Event,
        out: TextIO | None = None,
    ) -> None:
        self.parser = parser
        self.client = client
        self.source = source
        self.state = state
        self.state_key = state_key
        self.opt = options
        self.stop = stop
        self.out = out if out is not None else sys.stderr
        self.counts = Counts()
        self.batch: list[Rejection] = []
        self._batch_since = 0.0
        self._saved: tuple[int, int, int] | None = None
        self._saved_at = 0.0

    def run(self) -> int:
        last_stats = time.monotonic()
        stats_seen = -1
        while not self.stop.is_set():
            raw = self.source.read_line()
            if raw is not None:
                self._handle(raw)
                if (len(self.batch) >= self.opt.batch or self._batch_due()) and not self._flush():
                    break
                continue
            if self.batch and (self.source.finished() or self._batch_due()) and not self._flush():
                break
            self._save_if_idle(force=self.source.finished())
            if self.source.finished():
                break
            now = time.monotonic()
            if self.opt.follow and now - last_stats >= self.opt.stats_interval:
                if self.counts.lines != stats_seen:
                    self.print_summary()
                    stats_seen = self.counts.lines
                last_stats = now
            self.source.wait(self.opt.poll, self.stop)
        if self.batch and self.stop.is_set():
            # Stopping: send what can be sent within the grace period, then give up on the rest
            # (the state does not pass their lines: they are read again next time).
            self._flush(deadline=time.monotonic() + self.opt.grace)
        if not self.batch:
            self._save_if_idle(force=True)
        self.print_summary()
        return 0

    def _batch_due(self) -> bool:
        return bool(self.batch) and time.monotonic() - self._batch_since >= self.opt.interval

    def _handle(self, raw: bytes) -> None:
        self.counts.lines += 1
        parsed = self.parser.parse(raw)
        self.counts.kinds[parsed.kind] += 1
        if parsed.rejection is not None:
            if not self.batch:
                self._batch_since = time.monotonic()
            self.batch.append(parsed.rejection)
        elif parsed.kind is Kind.UNPARSABLE and log.isEnabledFor(logging.DEBUG):
            log.debug("unparsable (%s): %r", parsed.why, raw[:300])

    def _flush(self, deadline: float | None = None) -> bool:
        """Send the batch until the API takes it. False: stopped (or past ``deadline``) first."""
        delay = self.opt.backoff_min
        failures = 0
        reports = [r.report() for r in self.batch]
        while True:
            timeout = None
            if deadline is not None:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    return False
                timeout = min(timeout, self.client.timeout)
            try:
                result = self.client.send(reports, timeout)
            except Unavailable as exc:
                failures += 1
                pause = random.uniform(delay / 2, delay)  # jitter: many reporters, one API
                if exc.retry_after is not None:
                    pause = max(pause, min(exc.retry_after, self.opt.backoff_max))
                log.warning(
                    "API unavailable (%s); %d reports wait, retry %d in %.1f s",
                    exc,
                    len(reports),
                    failures,
                    pause,
                )
                delay = min(delay * 2, self.opt.backoff_max)
                if deadline is not None:
                    if time.monotonic() + pause >= deadline:
                        return False
                    time.sleep(pause)
                    continue
                if self.stop.is_set() or self.stop.wait(pause):
                    return False
                continue
            except BadBatch as exc:
                log.error(
                    "the API refused a batch of %d reports as malformed (%s): skipped; this is a bug, "
                    "please report it with the log lines around %s",
                    len(reports),
                    exc,
                    self.batch[0].time.isoformat(),
                )
                self.counts.dropped += len(reports)
                self.batch.clear()
                self._save_if_idle(force=True)
                return True
            if failures:
                log.info(
                    "API available again: batch of %d sent after %d failed tries", len(reports), failures
                )
            self._account(result, len(reports))
            self.batch.clear()
            self._save_if_idle(force=True)
            return True

    def _account(self, result: dict[str, Any], size: int) -> None:
        def number(name: str) -> int:
            value = result.get(name, 0)
            return value if isinstance(value, int) else 0

        self.counts.accepted += number("accepted")
        self.counts.duplicate += number("duplicate")
        self.counts.refused += number("refused")
        errors = result.get("errors") or []
        if not isinstance(errors, list) or not errors:
            return
        problems: Counter[str] = Counter()
        for item in errors:
            if isinstance(item, dict):
                problems[f"{item.get('field')}: {item.get('problem')}"] += 1
        detail = "; ".join(f"{p} ({n})" for p, n in problems.most_common(5))
        log.warning("the API refused %d of %d reports: %s", number("refused"), size, detail)
        if log.isEnabledFor(logging.DEBUG):
            for item in errors:
                index = item.get("index") if isinstance(item, dict) else None
                if isinstance(index, int) and 0 <= index < len(self.batch):
                    log.debug("refused: %s: %s", self.batch[index].report(), item)

    def _save_if_idle(self, *, force: bool = False) -> None:
        """Record the position when every line read so far is done (no report waiting)."""
        if self.state is None or self.batch:
            return
        where = self.source.where()
        if where is None or where == self._saved:
            return
        now = time.monotonic()
        identity_changed = self._saved is None or where[:2] != self._saved[:2]
        if not (force or identity_changed or now - self._saved_at >= self.opt.state_save_interval):
            return
        position = self.source.position()
        if position is None:
            return
        self.state.save(self.state_key, position)
        self._saved, self._saved_at = where, now

    def print_summary(self) -> None:
        print(f"s25rbl report-maillog: {self.counts.summary(len(self.batch))}", file=self.out, flush=True)


# --- the command ----------------------------------------------------------------------------


def _positive(kind: type[int] | type[float], low: float, high: float) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is out of range ({low:g} to {high:g})")
        return value

    return parse


def add_parser(subparsers: Any, remote_parent: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``report-maillog`` to the CLI's subcommands (``remote_parent`` adds --api/--token)."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "report-maillog",
        parents=[remote_parent],
        help="send the temporary rejections by our zones in a Postfix log to the API (learning)",
        description="Reads a Postfix mail log and sends each 4xx rejection caused by one of our zones "
        '("blocked using ZONE") to POST /v1/reports, in batches, exactly once: a state file '
        "remembers how far the log is done, and each report's idempotency key is derived from its "
        "log line. While the API is unavailable the batch is retried with backoff. Needs a token "
        "with scope 'report' (--token or S25RBL_API_TOKEN); the API defaults to http://<api.listen>.",
    )
    p.add_argument(
        "path", metavar="PATH", help="the mail log, e.g. /var/log/mail.log, or - for standard input"
    )
    p.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="keep reading as the log grows, across rotation (renamed and recreated, or truncated)",
    )
    p.add_argument(
        "--from-end",
        action="store_true",
        help="when the state file has no position for the log (first start): begin at its current "
        "end, like tail -n0 -F, and save that position at once; only lines written from then on are "
        "reported (without --follow: none). Ignored when a position is saved: reading resumes there. "
        "Not for - (standard input)",
    )
    p.add_argument(
        "--state",
        metavar="FILE",
        help="where to remember the position (default: report-maillog.state in the state directory: "
        "$STATE_DIRECTORY, else $XDG_STATE_HOME/s25rbl or ~/.local/state/s25rbl); not used for -",
    )
    p.add_argument(
        "--zone",
        action="append",
        metavar="ZONE",
        help="report rejections by this zone (repeatable; default: dns.zone and dns.hostname_zone)",
    )
    p.add_argument(
        "--batch",
        type=_positive(int, 1, MAX_BATCH),
        default=500,
        metavar="N",
        help="reports per request (500)",
    )
    p.add_argument(
        "--interval",
        type=_positive(float, 0.0, 3600),
        default=2.0,
        metavar="SECONDS",
        help="longest a report waits for its batch to fill before it is sent (2)",
    )
    p.add_argument(
        "--poll",
        type=_positive(float, 0.01, 60),
        default=1.0,
        metavar="SECONDS",
        help="with --follow: how often to look for new lines and rotation (1)",
    )
    p.add_argument(
        "--utc", action="store_true", help="classic syslog timestamps are UTC (default: local time)"
    )
    p.add_argument(
        "--stats",
        type=_positive(float, 1, 86400),
        default=900.0,
        metavar="SECONDS",
        help="with --follow: print the counts this often, when they changed (900)",
    )
    p.add_argument(
        "--backoff-max",
        type=_positive(float, 1, 3600),
        default=60.0,
        metavar="SECONDS",
        help="longest pause between tries while the API is unavailable (60; starts at 1, doubling)",
    )
    p.add_argument(
        "--timeout",
        type=_positive(float, 0.1, 600),
        default=30.0,
        metavar="SECONDS",
        help="HTTP request timeout (30; a batch that timed out is sent again, its duplicates absorbed)",
    )
    p.set_defaults(func=cmd_report_maillog)
    return p


def _zones(settings: Settings, given: list[str] | None) -> list[str]:
    names = given or [z for z in (settings.dns.zone, settings.dns.hostname_zone) if z]
    zones = []
    for name in names:
        try:
            zones.append(parse_zone(name))
        except ValueError as exc:
            raise InvalidEntry("--zone", str(exc)) from None
    return zones


def cmd_report_maillog(settings: Settings, args: argparse.Namespace) -> int:
    if args.from_end and args.path == "-":
        raise ReporterError("report-maillog: --from-end needs a log file; standard input (-) has no end", 2)
    url = getattr(args, "api", None) or os.environ.get("S25RBL_API_URL") or f"http://{settings.api.listen}"
    token = getattr(args, "token", None) or os.environ.get("S25RBL_API_TOKEN")
    if not token:
        raise ReporterError(
            "report-maillog needs an API token with scope 'report': --token or S25RBL_API_TOKEN", 2
        )
    client = ReportsClient(url, token, timeout=args.timeout)
    zones = _zones(settings, args.zone)
    parser = LineParser(zones, tz=UTC if args.utc else None)
    options = Options(
        batch=args.batch,
        interval=args.interval,
        poll=args.poll,
        follow=args.follow,
        stats_interval=args.stats,
        backoff_max=args.backoff_max,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            return
        log.info(
            "%s: finishing (sending what can be sent within %g s)", signal.Signals(signum).name, options.grace
        )
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    state: StateFile | None = None
    source: Source
    try:
        if args.path == "-":
            source = StdinSource(sys.stdin.buffer)
            key = "-"
        else:
            key = os.path.abspath(args.path)
            state = StateFile(
                Path(args.state) if args.state else default_state_dir(os.environ) / "report-maillog.state"
            )
            state.open()
            logfile = LogFile(key, follow=args.follow, rotate_quiet=max(1.0, 2 * args.poll))
            saved = state.get(key)
            logfile.start(saved, from_end=args.from_end)
            if saved is None and args.from_end and (end := logfile.position()) is not None:
                # Saved at once, not when the first line is done: a run stopped before that (or
                # without --follow, which reads nothing) must leave the next one, with or without
                # --from-end, resuming here rather than at the start of the log or a later end.
                state.save(key, end)
            source = FileSource(logfile)
        log.info("reporting rejections by %s from %s to %s", ", ".join(zones), args.path, client.url)
        reporter = Reporter(parser, client, source, state, key, options, stop)
        try:
            return reporter.run()
        except ReporterError:
            reporter.print_summary()
            raise
        finally:
            source.close()
    finally:
        if state is not None:
            state.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
