"""The reporter's loop: read lines, batch the rejections, send them, remember what is done."""

from __future__ import annotations

import json
import logging
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from s25rbl.api.client import ApiClient
from s25rbl.errors import ApiError, ApiUnreachable, BatchRefused, ReporterError, ReportsDeferred
from s25rbl.reporter.parse import Kind, LineParser, Parsed, Rejection
from s25rbl.reporter.sources import Source
from s25rbl.reporter.state import StateFile

log = logging.getLogger("s25rbl.reporter")

MAX_BATCH = 1000  # the API's limit per request


@dataclass
class Counts:
    """What the reporter read and what the API made of it."""

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


class ReportsClient:
    """``POST /v1/reports``, with the API's answers sorted into what the loop does next."""

    def __init__(self, api: ApiClient) -> None:
        self._api = api
        self.url = api.base + "/v1/reports"
        self.timeout = api.timeout

    def send(self, reports: list[dict[str, str]], timeout: float | None = None) -> dict[str, Any]:
        body = json.dumps({"reports": reports}, ensure_ascii=False).encode()
        try:
            data = self._api.call(
                "POST", "/v1/reports", body=body, content_type="application/json", timeout=timeout
            )
        except ApiUnreachable as exc:
            raise ReportsDeferred(str(exc)) from None
        except ApiError as exc:
            raise self._error(exc) from None
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

    def _error(self, exc: ApiError) -> Exception:
        text = "; ".join(exc.lines[:11])
        code = exc.status
        if code in (401, 403):
            what = "token" if code == 401 else "token's scope (it needs 'report')"
            return ReporterError(f"{self.url}: the API refused the {what}: {text}")
        if code == 404:
            return ReporterError(f"{self.url}: not found ({text}): check --api / S25RBL_API_URL")
        if 300 <= code < 400:
            return ReporterError(f"{self.url}: redirected to {exc.location or '?'}: give the API's own URL")
        if code in (408, 425, 429) or code >= 500:
            return ReportsDeferred(f"{self.url}: {text}", exc.retry_after)
        return BatchRefused(text)


class Sender(Protocol):
    """What the loop needs of a client (``ReportsClient``; tests use fakes)."""

    timeout: float

    def send(self, reports: list[dict[str, str]], timeout: float | None = None) -> dict[str, Any]: ...


@dataclass
class Options:
    """How the loop batches, polls, backs off and reports."""

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
        try:
            parsed = self.parser.parse(raw)
        except Exception as exc:  # a line is the client's text: whatever it holds, never fatal
            log.warning(
                "line %d not understood (%s: %s): counted as unparsable",
                self.counts.lines,
                type(exc).__name__,
                exc,
            )
            parsed = Parsed(Kind.UNPARSABLE, why=f"{type(exc).__name__}")
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
            except ReportsDeferred as exc:
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
            except BatchRefused as exc:
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
