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
lines whose reports the API accepted (see ``state``). 401/403/404 are
configuration errors (exit 1); 400/413/415/422 mean a bug here: the batch is logged and
skipped, never retried forever.
"""
