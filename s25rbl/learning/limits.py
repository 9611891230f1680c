"""How many reports a node takes: per reporter (its token) and per reported address, as token
buckets in memory. Bounded: at most ``max_keys`` buckets each (a fixed-size entry of about
250 bytes: 50,000 addresses hold about 12 MiB); the least recently used bucket goes first, as
an idle one would soon be full again. Each node limits on its own."""

from __future__ import annotations

from collections import OrderedDict

from s25rbl.clock import Clock


class RateLimiter:
    """``per_minute`` tokens a minute for each key, up to ``burst`` saved up."""

    def __init__(self, per_minute: float, burst: float, *, max_keys: int, clock: Clock) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key: (tokens, at)

    def take(self, key: str, n: int = 1) -> float:
        """Take ``n`` tokens: 0.0 if granted; else nothing is taken and the answer is the
        seconds until ``n`` would be there (infinite if ``n`` exceeds the burst)."""
        now = self._clock.monotonic()
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        wait = 0.0
        if tokens >= n:
            tokens -= n
        else:
            wait = float("inf") if n > self.burst or self.rate <= 0 else (n - tokens) / self.rate
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)


class ReportLimits:
    """A node's report limits: ``per_reporter`` reports a minute for each token (a whole batch
    always fits in its burst), ``per_address`` reports a minute about any one client address."""

    def __init__(self, per_reporter: float, per_address: float, *, max_batch: int, clock: Clock) -> None:
        self.reporters = RateLimiter(per_reporter, max(per_reporter, max_batch), max_keys=10_000, clock=clock)
        self.addresses = RateLimiter(per_address, max(per_address, 1), max_keys=50_000, clock=clock)
