"""``s25rbl report-maillog``: its arguments, and the command wiring parser, client, source,
state file and loop together."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from datetime import UTC
from pathlib import Path
from types import FrameType
from typing import Any

from s25rbl.api.client import ApiClient
from s25rbl.cli.progress import Progress
from s25rbl.config import Settings, default_state_dir, parse_zone
from s25rbl.errors import ApiError, ApiUnreachable, InvalidEntry, ReporterError
from s25rbl.reporter.logfile import LogFile
from s25rbl.reporter.parse import LineParser
from s25rbl.reporter.run import MAX_BATCH, Options, Reporter, ReportsClient
from s25rbl.reporter.sources import FileSource, Source, StdinSource
from s25rbl.reporter.state import StateFile

log = logging.getLogger("s25rbl.reporter")


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
        help="send the temporary rejections by our zones in a Postfix log to the API (learning)",
        description="Reads a Postfix mail log and sends each 4xx rejection caused by one of our zones "
        '(Postfix\'s DNSBL reply: "Service unavailable; CLASS [WHAT] blocked using ZONE") '
        "to POST /v1/reports, in batches, exactly once: a state file "
        "remembers how far the log is done, and each report's idempotency key is derived from its "
        "log line. While the API is unavailable the batch is retried with backoff. Needs a token "
        "with scope 'report' (--token or S25RBL_API_TOKEN); the API defaults to http://<api.listen>.",
    )
    p.add_argument(
        "path", metavar="PATH", help="the mail log, e.g. /var/log/mail.log, or - for standard input"
    )
    p.add_argument(
        "--api",
        metavar="URL",
        help="the s25rbl API to send the reports to (default: $S25RBL_API_URL, else "
        "http://<api.listen> of the configuration)",
    )
    p.add_argument("--token", help="API token with scope 'report' (or S25RBL_API_TOKEN)")
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
        help="report rejections by this zone (repeatable; default: the zones the API's server "
        "serves, GET /v1/reports/zones, else dns.zone and dns.hostname_zone of the configuration)",
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


def _zones(settings: Settings, given: list[str] | None, api: ApiClient) -> tuple[list[str], str]:
    """The zones to watch and where they come from: ``--zone``, else the server the reports
    go to (it knows which zones it serves), else the configuration."""
    names, origin = given, "--zone"
    if not names:
        try:
            answer = api.json("GET", "/v1/reports/zones", timeout=min(api.timeout, 10.0))
            names = [str(z) for z in answer["zones"]] if isinstance(answer, dict) else None
            origin = f"the server at {api.base}"
        except (ApiError, ApiUnreachable, KeyError, TypeError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.warning(
                "cannot ask %s which zones it serves (%s): using the configuration's", api.base, first
            )
    if not names:
        names = [z for z in (settings.dns.zone, settings.dns.hostname_zone) if z]
        origin = f"the configuration ({settings.source})"
    zones = []
    for name in names:
        try:
            zones.append(parse_zone(name))
        except ValueError as exc:
            raise InvalidEntry("--zone", str(exc)) from None
    return zones, origin


def cmd_report_maillog(settings: Settings, args: argparse.Namespace) -> int:
    if args.from_end and args.path == "-":
        raise ReporterError("report-maillog: --from-end needs a log file; standard input (-) has no end", 2)
    url = getattr(args, "api", None) or os.environ.get("S25RBL_API_URL") or f"http://{settings.api.listen}"
    token = getattr(args, "token", None) or os.environ.get("S25RBL_API_TOKEN")
    if not token:
        raise ReporterError(
            "report-maillog needs an API token with scope 'report': --token or S25RBL_API_TOKEN", 2
        )
    api = ApiClient(url, token, timeout=args.timeout)
    client = ReportsClient(api)
    zones, origin = _zones(settings, args.zone, api)
    print(f"report-maillog: reporting rejections by {', '.join(zones)} (from {origin})", file=sys.stderr)
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
        counts = reporter.counts
        # A log read to its end gets a progress line on a terminal; --follow never ends.
        progress = Progress("report-maillog")
        progress.enabled = progress.enabled and not args.follow
        try:
            with progress:
                progress.watch(lambda: f"{counts.lines:,} lines read, {counts.accepted:,} reports accepted")
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
