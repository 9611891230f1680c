"""Taking reports: validate each, store it once, and learn what the retries show.

One batch is one transaction. A report that is refused (bad field, time outside the window)
refuses only itself; the answer says why, per report.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from s25rbl.clock import Clock
from s25rbl.config import LearningSettings
from s25rbl.errors import DuplicateEntry, InvalidEntry
from s25rbl.learning.retries import count_retries
from s25rbl.learning.senders import normalise_recipient, normalise_sender
from s25rbl.lists.domains import registrable_domain
from s25rbl.lists.values import EntryKind, EntrySource, EntrySpec, ListName, parse_ip
from s25rbl.store.db import Store
from s25rbl.store.entries import EntryRepository
from s25rbl.store.learning import LearnBlockRepository, ReportRepository, SuggestionRepository
from s25rbl.store.models import Entry, Report, Suggestion
from s25rbl.store.tokens import AuditRepository

log = logging.getLogger(__name__)

REPORT_FIELDS = {"client_ip", "client_name", "helo", "sender", "recipient", "time", "idempotency_key"}
MAX_BATCH = 1000
CLOCK_SKEW = timedelta(minutes=5)  # reporters' clocks may run a little ahead of ours


@dataclass
class IngestResult:
    """What one batch of reports did: counts, per-report errors, what was learned or suggested."""

    accepted: int = 0
    duplicate: int = 0
    refused: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    learned: list[str] = field(default_factory=list)
    suggested: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicate": self.duplicate,
            "refused": self.refused,
            "errors": self.errors,
            "learned": self.learned,
            "suggested": self.suggested,
        }


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
    return value


def build_report(body: Any, *, reporter: str, now: datetime, window: timedelta) -> Report:
    """Validate one report object; raises InvalidEntry naming the field."""
    if not isinstance(body, dict):
        raise InvalidEntry("report", "must be a JSON object")
    unknown = sorted(set(body) - REPORT_FIELDS)
    if unknown:
        raise InvalidEntry(unknown[0], "unknown field")
    ip = str(parse_ip(_text(body, "client_ip", 64, required=True), "client_ip"))
    name = _text(body, "client_name", 255, required=False, default="unknown").lower().rstrip(".") or "unknown"
    helo = _text(body, "helo", 255, required=False)
    sender = _text(body, "sender", 512, required=True)
    recipient = normalise_recipient(_text(body, "recipient", 512, required=True))
    if not recipient:
        raise InvalidEntry("recipient", "may not be empty")
    when = now
    if body.get("time") is not None:
        raw = _text(body, "time", 64, required=True)
        try:
            when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidEntry("time", f"{raw!r} is not an ISO 8601 date-time") from None
        if when.tzinfo is None:
            raise InvalidEntry("time", "needs a time zone, e.g. 2026-11-23T21:50:01+00:00")
        when = when.astimezone(UTC)
        if when > now + CLOCK_SKEW:
            raise InvalidEntry("time", "is in the future")
        if when < now - window:
            raise InvalidEntry("time", "is older than the retry window; it can no longer count")
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
        sender_norm=normalise_sender(sender),
        recipient=recipient,
    )


class Learner:
    """Applies the learning rules of product §5 inside one unit of work."""

    def __init__(self, settings: LearningSettings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.window = timedelta(seconds=settings.window)
        self.min_interval = timedelta(seconds=settings.min_interval)
        self.lifetime = timedelta(seconds=settings.lifetime)

    async def ingest(self, store: Store, bodies: Sequence[Any], reporter: str) -> IngestResult:
        result = IngestResult()
        now = self.clock.now()
        async with store.transaction() as session:
            reports = ReportRepository(session)
            for index, body in enumerate(bodies):
                try:
                    report = build_report(body, reporter=reporter, now=now, window=self.window)
                except InvalidEntry as exc:
                    result.refused += 1
                    result.errors.append({"index": index, "field": exc.field, "problem": exc.problem})
                    continue
                if not await reports.add(report):
                    result.duplicate += 1
                    continue
                result.accepted += 1
                await self._learn_from(session, report, now, result)
        return result

    async def _learn_from(
        self, session: AsyncSession, report: Report, now: datetime, result: IngestResult
    ) -> None:
        since = report.reported_at - self.window
        reports = ReportRepository(session)
        entries = EntryRepository(session)
        existing = await entries.find(ListName.WHITE, EntryKind.IP, report.client_ip)
        if existing is not None and existing.source is EntrySource.LEARNED:
            # Still being seen: renew its lifetime.
            renewed = now + self.lifetime
            if existing.expires_at is None or existing.expires_at < renewed:
                existing.expires_at = renewed
        elif existing is None:
            times = await reports.triplet_times(report.client_ip, report.sender_norm, report.recipient, since)
            retries = count_retries(times, self.min_interval)
            if retries >= self.settings.retries and await self._learn(session, report, retries, now):
                result.learned.append(report.client_ip)
        domain = await self._pool(session, report, since, now)
        if domain is not None:
            result.suggested.append(domain)

    async def _learn(
        self, session: AsyncSession, report: Report, retries: int, now: datetime, what: str = "retries"
    ) -> bool:
        if await LearnBlockRepository(session).blocked(report.client_ip):
            log.info("not learning %s: the operator forbade it", report.client_ip)
            return False
        reason = f"learned: {retries} {what} from <{report.sender}> to <{report.recipient}>"[:255]
        spec = EntrySpec(ListName.WHITE, EntryKind.IP, report.client_ip, reason)
        try:
            await EntryRepository(session).add(
                spec, source=EntrySource.LEARNED, creator="learning", now=now, expires_at=now + self.lifetime
            )
        except DuplicateEntry:
            return False  # another node learned it a moment ago: learned once
        await AuditRepository(session).add(now, "learning", "learned", report.client_ip, reason)
        log.info("learned %s (%s): %s", report.client_ip, report.client_name, reason)
        return True

    # --- passes seen by the policy service (product §7) --------------------------------------
    # The policy service counts its own passes (tarpits survived, greylisted triplets retried);
    # an address it learns goes through the same write as one learned from retries.

    async def learn_from_policy(
        self,
        session: AsyncSession,
        *,
        ip: str,
        name: str,
        sender: str,
        recipient: str,
        passes: int,
        now: datetime,
    ) -> bool:
        """Learn ``ip`` after ``passes`` passes, inside the caller's unit of work; False if it is
        forbidden or learned already."""
        seen = Report(client_ip=ip, client_name=name, sender=sender, recipient=recipient)  # never stored
        return await self._learn(session, seen, passes, now, what="policy passes")

    # -----------------------------------------------------------------------------------------

    async def _pool(
        self, session: AsyncSession, report: Report, since: datetime, now: datetime
    ) -> str | None:
        """A provider's pool: one (sender, recipient) retried from several addresses whose
        confirmed names share a registrable domain."""
        if report.client_name == "unknown":
            return None
        domain = registrable_domain(report.client_name)
        if domain is None:
            return None
        pair = await ReportRepository(session).pair_reports(report.sender_norm, report.recipient, since)
        members = [
            r for r in pair if r.client_name != "unknown" and registrable_domain(r.client_name) == domain
        ]
        addresses = sorted({r.client_ip for r in members})
        if len(addresses) < 2:
            return None
        if count_retries([r.reported_at for r in members], self.min_interval) < self.settings.retries:
            return None
        entries = EntryRepository(session)
        if await entries.find(ListName.WHITE, EntryKind.DOMAIN, domain) is not None:
            return None
        # Trim the lists, never the JSON text: the evidence must stay readable (<= 8,000 chars).
        evidence = json.dumps(
            {
                "sender": report.sender_norm[:200],
                "recipient": report.recipient[:200],
                "addresses": addresses[:40],
                "address_count": len(addresses),
                "names": sorted({r.client_name for r in members})[:10],
                "attempts": [
                    {"time": r.reported_at.isoformat(), "client_ip": r.client_ip} for r in members[-20:]
                ],
            }
        )
        suggestion = await SuggestionRepository(session).upsert(domain, evidence, now)
        if suggestion is None or suggestion.status != "open":
            return None
        if self.settings.auto_approve_pools:
            await approve_suggestion(session, suggestion.id, actor="learning (auto_approve_pools)", now=now)
        return domain


async def approve_suggestion(
    session: AsyncSession, suggestion_id: int, *, actor: str, now: datetime
) -> tuple[Suggestion, Entry]:
    """Whitelist a suggestion's domain (inside the caller's unit of work), audited."""
    suggestions = SuggestionRepository(session)
    suggestion = await suggestions.get(suggestion_id)
    if suggestion.status != "open":
        raise DuplicateEntry(f"suggestion {suggestion_id} is already {suggestion.status}")
    evidence = json.loads(suggestion.evidence)
    reason = f"pool retries from {len(evidence.get('addresses', []))} addresses (suggestion {suggestion_id})"
    spec = EntrySpec(ListName.WHITE, EntryKind.DOMAIN, suggestion.domain, reason[:255])
    entry = await EntryRepository(session).add(spec, source=EntrySource.MANUAL, creator=actor, now=now)
    suggestion.status = "approved"
    suggestion.entry_id = entry.id
    suggestion.updated_at = now
    await AuditRepository(session).add(
        now, actor, "suggestion.approve", suggestion.domain, f"entry #{entry.id}"
    )
    return suggestion, entry
