"""The review commands: ``learned`` (list, forbidden, revoke, forbid), ``suggestions`` (list,
approve, reject) and ``audit``, on the local store or through a server's API (``--api``), as
``GET /v1/learned``, ``/v1/forbidden``, ``/v1/suggestions`` and ``/v1/audit`` offer them.
Tables for people, ``--json`` (the API's shapes) for programs."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from s25rbl.cli.backend import LocalBackend
from s25rbl.cli.commands import _remote
from s25rbl.cli.review_backend import LocalReview, RemoteReview, Review
from s25rbl.config import Settings
from s25rbl.errors import InvalidEntry
from s25rbl.lists.values import check_reason, parse_ip, parse_since
from s25rbl.node.runloop import run_loop
from s25rbl.service.learning import SUGGESTION_STATUSES

T = TypeVar("T")
AUDIT_LIMIT = 100


def _count(text: str) -> int:
    """A positive number of rows (``--limit``)."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of rows, 1 or more")
    return int(text)


def add_parsers(sub: Any, remote: argparse.ArgumentParser) -> None:
    """Add ``learned``, ``suggestions`` and ``audit`` to the CLI's subcommands."""
    learned = sub.add_parser(
        "learned", help="review the addresses learned from retries: list, revoke, forbid"
    )
    lsub = learned.add_subparsers(dest="learned_command", required=True, metavar="ACTION")
    p = lsub.add_parser("list", parents=[remote], help="learned addresses with their evidence")
    p.add_argument("--limit", type=_count, help="at most this many (default: all)")
    p.add_argument("--json", action="store_true", help="the API's items, with every report and pass")
    p.set_defaults(func=cmd_learned_list)
    p = lsub.add_parser("forbidden", parents=[remote], help="the addresses forbidden to learn")
    p.add_argument("--limit", type=_count, help="at most this many (default: all)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_learned_forbidden)
    for name, forbid, what in (
        ("revoke", False, "remove learned addresses; their retries so far count no more"),
        ("forbid", True, "revoke and never learn again (also addresses not learned yet)"),
    ):
        p = lsub.add_parser(name, parents=[remote], help=what)
        p.add_argument("ip", metavar="IP", nargs="+")
        p.add_argument("--reason", default="", help="why (recorded; up to 255 characters)")
        p.set_defaults(func=cmd_learned_revoke, forbid=forbid)

    suggestions = sub.add_parser(
        "suggestions", help="review the pool domains suggested for the whitelist: list, approve, reject"
    )
    ssub = suggestions.add_subparsers(dest="suggestions_command", required=True, metavar="ACTION")
    p = ssub.add_parser("list", parents=[remote], help="suggestions with the addresses behind them")
    p.add_argument("--status", choices=SUGGESTION_STATUSES, help="only these (default: every status)")
    p.add_argument("--limit", type=_count, help="at most this many (default: all)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_suggestions_list)
    for name, approve, what in (
        ("approve", True, "whitelist the suggested domains"),
        ("reject", False, "turn suggestions down (their domain is not suggested again)"),
    ):
        p = ssub.add_parser(name, parents=[remote], help=what)
        p.add_argument("id", type=int, nargs="+")
        p.set_defaults(func=cmd_suggestions_decide, approve=approve)

    p = sub.add_parser(
        "audit",
        parents=[remote],
        help="read the audit log: who changed what, when (oldest first)",
        description="Events oldest first from --since on; with --api the token needs scope admin. "
        "Changes made with the local CLI are recorded with the actor 'cli', through the API with "
        "'token:NAME'.",
    )
    p.add_argument(
        "--since", metavar="WHEN", help="from this time: an age (24h, 7d) or an ISO 8601 date or date-time"
    )
    p.add_argument("--actor", help="only this actor's events, e.g. cli or token:ops")
    p.add_argument(
        "--limit", type=_count, default=AUDIT_LIMIT, help=f"at most N events (default {AUDIT_LIMIT})"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit)


def _with_review(settings: Settings, args: argparse.Namespace, work: Callable[[Review], Awaitable[T]]) -> T:
    api = _remote(args)

    async def run() -> T:
        review: Review = (
            RemoteReview(api) if api is not None else LocalReview(await LocalBackend.open(settings))
        )
        try:
            return await work(review)
        finally:
            await review.close()

    return run_loop(run())


def _time(value: str | None) -> str:
    return value[:16].replace("T", " ") if value else "-"


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]], empty: str) -> None:
    """Columns as wide as their widest cell; the last one (free text) unpadded."""
    if not rows:
        print(empty)
        return
    cells = [list(headers)] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers) - 1)]
    for row in cells:
        print("  ".join([c.ljust(w) for c, w in zip(row, widths, strict=False)] + [row[-1]]).rstrip())


def _show(rows: list[dict[str, Any]], as_json: bool, table: Callable[[list[dict[str, Any]]], None]) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
    else:
        table(rows)


def cmd_learned_list(settings: Settings, args: argparse.Namespace) -> int:
    rows = _with_review(settings, args, lambda r: r.learned(args.limit))
    headers = ("ID", "ADDRESS", "LEARNED", "EXPIRES", "REPORTS", "PASSES", "REASON")
    _show(
        rows,
        args.json,
        lambda items: print_table(
            headers,
            [
                (
                    e["id"],
                    e["value"],
                    _time(e["created_at"]),
                    _time(e["expires_at"]),
                    len(e["evidence"]),
                    len(e["passes"]),
                    e["reason"],
                )
                for e in items
            ],
            "no learned addresses",
        ),
    )
    return 0


def cmd_learned_forbidden(settings: Settings, args: argparse.Namespace) -> int:
    rows = _with_review(settings, args, lambda r: r.forbidden(args.limit))
    headers = ("ADDRESS", "SINCE", "BY", "REASON")
    _show(
        rows,
        args.json,
        lambda items: print_table(
            headers,
            [(b["ip"], _time(b["created_at"]), b["created_by"], b["reason"]) for b in items],
            "no address is forbidden to learn",
        ),
    )
    return 0


def cmd_learned_revoke(settings: Settings, args: argparse.Namespace) -> int:
    ips = [str(parse_ip(ip, "IP")) for ip in args.ip]
    reason = check_reason(args.reason, "--reason")

    async def work(review: Review) -> None:
        for ip in ips:
            await review.revoke(ip, forbid=args.forbid, reason=reason)
            done = "forbidden to learn (revoked if it was learned)" if args.forbid else "revoked"
            print(f"{ip}: {done}")

    _with_review(settings, args, work)
    return 0


def cmd_suggestions_list(settings: Settings, args: argparse.Namespace) -> int:
    rows = _with_review(settings, args, lambda r: r.suggestions(args.status, args.limit))
    headers = ("ID", "STATUS", "SUGGESTED", "ADDRESSES", "ENTRY", "DOMAIN")
    _show(
        rows,
        args.json,
        lambda items: print_table(
            headers,
            [
                (
                    s["id"],
                    s["status"],
                    _time(s["created_at"]),
                    s["evidence"].get("address_count", len(s["evidence"].get("addresses", []))),
                    s["entry_id"] or "-",
                    s["domain"],
                )
                for s in items
            ],
            "no suggestions",
        ),
    )
    return 0


def cmd_suggestions_decide(settings: Settings, args: argparse.Namespace) -> int:
    async def work(review: Review) -> None:
        for suggestion_id in args.id:
            result = await review.decide(suggestion_id, args.approve)
            if args.approve:
                entry = result["entry"]
                print(
                    f"suggestion {suggestion_id} approved: whitelist domain {entry['value']} "
                    f"(entry {entry['id']})"
                )
            else:
                print(f"suggestion {suggestion_id} rejected: {result['domain']}")

    _with_review(settings, args, work)
    return 0


def cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    since = parse_since(args.since, "--since", datetime.now(UTC)) if args.since is not None else None
    if args.actor is not None and not args.actor.strip():
        raise InvalidEntry("--actor", "give an actor, e.g. cli or token:ops")
    rows = _with_review(settings, args, lambda r: r.audit(since, args.actor, args.limit + 1))
    more = len(rows) > args.limit
    rows = rows[: args.limit]
    headers = ("ID", "AT", "ACTOR", "ACTION", "TARGET", "DETAIL")
    _show(
        rows,
        args.json,
        lambda items: print_table(
            headers,
            [
                (e["id"], _time(e["at"]), e["actor"], e["action"], e["target"] or "-", e["detail"])
                for e in items
            ],
            "no audit events",
        ),
    )
    if more:
        print(
            f"s25rbl: more events follow: use a later --since or a larger --limit (now {args.limit})",
            file=sys.stderr,
        )
    return 0
