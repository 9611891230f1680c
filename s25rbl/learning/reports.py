"""One report, validated: every field checked and named when refused, so that nothing a report
holds can fail its batch. Its claimed time is evidence; the time that counts is when s25rbl
received it (product §5)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

from s25rbl.errors import InvalidEntry
from s25rbl.learning.senders import normalise_recipient, normalise_sender
from s25rbl.lists.values import parse_ip
from s25rbl.store.models import Report

REPORT_FIELDS = {"client_ip", "client_name", "helo", "sender", "recipient", "time", "idempotency_key"}
CLOCK_SKEW = timedelta(minutes=5)  # reporters' clocks may run a little ahead of ours


def _text(body: dict[str, Any], name: str, limit: int, *, required: bool, default: str = "") -> str:
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidEntry(name, "is required")
        return default
    if not isinstance(value, str):
        raise InvalidEntry(name, "must be a string")
    if len(value) > limit:
        raise InvalidEntry(name, f"longer than {limit} characters")
    if any(ord(c) < 32 for c in value):
        raise InvalidEntry(name, "control characters are not allowed")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800"): no database can store it
        raise InvalidEntry(name, "is not valid Unicode (a lone surrogate)") from None
    return value


def claimed_time(raw: str, *, now: datetime, window: timedelta) -> datetime:
    """The ``time`` a reporter claims, in UTC: refused if it is no real time, in the future, or
    older than the retry window (a report that could no longer count)."""
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        if when.tzinfo is None:
            raise InvalidEntry("time", "needs a time zone, e.g. 2026-11-23T21:50:01+00:00")
        when = when.astimezone(UTC)
    except ValueError:
        raise InvalidEntry("time", f"{raw!r} is not an ISO 8601 date-time") from None
    except OverflowError:  # 9999-12-31T23:59:59-23:59 is past year 9999 in UTC
        raise InvalidEntry("time", f"{raw!r} is not a time between the years 1 and 9999 (UTC)") from None
    if when > now + CLOCK_SKEW:
        raise InvalidEntry("time", "is in the future")
    if when < now - window:
        raise InvalidEntry("time", "is older than the retry window; it can no longer count")
    return when


def build_report(body: Any, *, reporter: str, now: datetime, window: timedelta) -> Report:
    """Validate one report object; raises InvalidEntry naming the field."""
    if not isinstance(body, dict):
        raise InvalidEntry("report", "must be a JSON object")
    unknown = sorted(set(body) - REPORT_FIELDS)
    if unknown:
        raise InvalidEntry(str(unknown[0])[:100], "unknown field")
    ip = str(parse_ip(_text(body, "client_ip", 64, required=True), "client_ip"))
    name = _text(body, "client_name", 255, required=False, default="unknown").lower().rstrip(".") or "unknown"
    helo = _text(body, "helo", 255, required=False)
    sender = _text(body, "sender", 512, required=True)
    recipient = normalise_recipient(_text(body, "recipient", 512, required=True))
    if not recipient:
        raise InvalidEntry("recipient", "may not be empty")
    when = now
    if body.get("time") is not None:
        when = claimed_time(_text(body, "time", 64, required=True), now=now, window=window)
    key = _text(body, "idempotency_key", 160, required=False)
    if not key:
        # No key given: the report's own content is its identity.
        key = hashlib.sha256(f"{reporter}|{ip}|{sender}|{recipient}|{when.isoformat()}".encode()).hexdigest()
    return Report(
        idempotency_key=key,
        reported_at=when,
        received_at=now,
        reporter=reporter,
        client_ip=ip,
        client_name=name,
        helo=helo,
        sender=sender,
        sender_norm=normalise_sender(sender)[:512],
        recipient=recipient,
    )
