"""What counts as a retry: the same (client IP, sender, recipient) again, no sooner than the
minimum interval after the attempt before it, within the retry window."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta


def count_retries(times: Iterable[datetime], min_interval: timedelta) -> int:
    """Retries among attempts at ``times``: attempts spaced at least ``min_interval`` apart,
    less the first. Attempts closer together (a client hammering, or the same rejection
    logged twice) count once."""
    retries = -1
    last: datetime | None = None
    for when in sorted(times):
        if last is None or when - last >= min_interval:
            retries += 1
            last = when
    return max(retries, 0)
