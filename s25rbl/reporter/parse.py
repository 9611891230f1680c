"""Reading a Postfix log line: is it a temporary rejection by one of our zones, and what report
does it make."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from enum import StrEnum

from s25rbl.reporter.state import MAX_LINE

KEY_LENGTH = 64

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
# Postfix's DNSBL reply, as smtpd_check.c's default_rbl_reply and the shipped rbl_reply write
# it: "[DSN ]Service unavailable; CLASS [WHAT] blocked using DOMAIN[; REASON]", then
# log_whatsup's "; from=<S> to=<R> proto=P[ helo=<H>]". Only this reply counts: "blocked using"
# anywhere else (a HELO, a sender, another check's text) is the client's, or someone else's.
_DNSBL_REPLY = re.compile(
    r" (?:[245]\.\d{1,3}\.\d{1,3} )?Service unavailable; "
    r"(?P<cls>Client host|Unverified Client host|Helo command|Sender address|Recipient address) "
    r"\[(?P<what>[^\s\[\]]+)\] blocked using (?P<zone>[A-Za-z0-9._-]+)(?:; (?P<reason>.*))?",
    re.DOTALL,
)


class Kind(StrEnum):
    """What a log line is, for the counts."""

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
    time: datetime  # in UTC
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
            "time": self.time.isoformat(),
            "idempotency_key": self.idempotency_key,
        }


@dataclass(frozen=True, slots=True)
class Parsed:
    """A line's kind, its rejection if it is one, and why it is not."""

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


def _what_fits(cls: str, what: str, name: str, ip: str, helo: str, sender: str, recipient: str) -> bool:
    """WHAT in ``CLASS [WHAT]`` is what the restriction looked up: the client's address or
    name, its HELO, or the sender's or recipient's domain. A line whose WHAT is not this
    client's is some other rejection dressed up as ours."""
    what = what.lower()
    if cls == "Client host":  # reject_rbl_client: the address; reject_rhsbl_client: the name
        return what in (ip.lower(), name.lower())
    if cls == "Helo command":
        return what == helo.lower()
    if cls == "Sender address":
        return what == sender.rpartition("@")[2].lower()
    if cls == "Recipient address":
        return what == recipient.rpartition("@")[2].lower()
    # Unverified Client host: the client's PTR name, which Postfix logs only when verified
    # (else "unknown"); Postfix uses only syntactically valid names, as the brackets ensure.
    return name in ("unknown", what) or name.lower() == what


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
        # The reply ends where log_whatsup's "; from=<" begins: nothing before it comes from
        # the client but WHAT, which the pattern keeps inside its brackets and checks below.
        text = reject["reply"]
        cut = text.find("; from=<")
        dnsbl = _DNSBL_REPLY.fullmatch(text, 0, len(text) if cut < 0 else cut)
        if dnsbl is None:
            return Parsed(Kind.NOT_OURS, why="not a DNSBL rejection")
        zone = dnsbl["zone"].lower().rstrip(".")
        if zone not in self.zones:
            return Parsed(Kind.NOT_OURS, why=f"blocked using {zone}")
        code = int(reject["code"])
        if 500 <= code <= 599:
            return Parsed(Kind.IGNORED_5XX, why=f"{code}: a permanent rejection")
        if not 400 <= code <= 499:
            return Parsed(Kind.UNPARSABLE, why=f"reply code {code}")
        if reject["stage"] != "RCPT":
            return Parsed(Kind.UNPARSABLE, why=f"rejected at {reject['stage']}: no sender and recipient")
        tail = split_tail(text)
        if tail is None:
            return Parsed(Kind.UNPARSABLE, why="no 'from=<...> to=<...> proto=...' at the end")
        sender, recipient, helo = tail
        if not _what_fits(dnsbl["cls"], dnsbl["what"], reject["name"], reject["ip"], helo, sender, recipient):
            return Parsed(Kind.NOT_OURS, why=f"{dnsbl['cls']} [{dnsbl['what']}] is not this client's")
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
        """The line's time in UTC; None if it has none, or none that is a real time (a bad
        stamp makes its line unparsable, never the reporter fail)."""
        if stamp is None:
            return None
        try:
            when = self._stamp_time(stamp)
            return None if when is None else when.astimezone(UTC)
        except (ValueError, OverflowError):  # e.g. 9999-12-31T23:59:59-23:59 is past year 9999 in UTC
            return None

    def _stamp_time(self, stamp: re.Match[str]) -> datetime | None:
        if "ts" in stamp.groupdict():
            when = datetime.fromisoformat(stamp["ts"].replace("Z", "+00:00"))
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
