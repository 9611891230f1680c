"""The ``s25rbl`` command: serve, migrate, check, entries, import, export.

Exit status: 0 done, 1 the operation failed (duplicate, not found, store unavailable, bad
list file), 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from s25rbl import __version__
from s25rbl.config import Endpoint, Settings, load_settings
from s25rbl.entries import EntrySpec, parse_hostname, parse_ip
from s25rbl.errors import ConfigError, InvalidEntry, S25rblError
from s25rbl.runloop import run_loop
from s25rbl.store.models import EntryKind, EntrySource, ListName

T = TypeVar("T")
log = logging.getLogger("s25rbl")


def _setup_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log.level.upper(),
        format="%(asctime)s s25rbl %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Alembic narrates every step at INFO; an operator only needs to hear of problems.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # it narrates every run at INFO


def _parse_expiry(text: str | None) -> datetime | None:
    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    if text[:-1].isdigit() and text[-1:] in units:
        return datetime.now(UTC) + timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidEntry("--expires", f"{text!r}: use a duration (30d, 12h) or an ISO date") from None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    if when <= datetime.now(UTC):
        raise InvalidEntry("--expires", f"{text!r} is in the past")
    return when


# --- commands ------------------------------------------------------------------------------


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from s25rbl.app import run

    def ready(dns: list[Endpoint], api: Endpoint) -> None:
        where = ", ".join(str(e) for e in dns)
        print(f"s25rbl {__version__} serving DNS (udp+tcp) on {where}", flush=True)
        print(
            f"  blocklist zone {settings.dns.zone}, whitelist zone {settings.dns.whitelist_zone}", flush=True
        )
        print(f"  API on http://{api}/  store {settings.database.url}", flush=True)
        first = dns[0]
        print(f"  try: dig @{first.host} -p {first.port} 2.0.0.127.{settings.dns.zone} A", flush=True)

    try:
        run_loop(run(settings, ready))
    except OSError as exc:
        # A port taken or not ours to bind: say which, without a traceback.
        print(f"s25rbl: cannot listen: {exc.strerror or exc} ({_listen_summary(settings)})", file=sys.stderr)
        return 1
    return 0


def _listen_summary(settings: Settings) -> str:
    dns = ", ".join(str(e) for e in settings.dns.listen)
    return f"DNS {dns}, API {settings.api.listen}"


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from s25rbl.store.db import current_revision, migrate

    migrate(settings.database.url, args.revision)
    print(f"database at revision {current_revision(settings.database.url)}")
    return 0


async def _with_store(settings: Settings, work: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
    from s25rbl.app import open_store
    from s25rbl.clock import SystemClock

    store = await open_store(settings, SystemClock())
    try:
        return await work(store)
    finally:
        await store.close()


def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    from s25rbl.app import build_engine
    from s25rbl.clock import SystemClock
    from s25rbl.service import load_index

    if (args.ip is None) == (args.name is None):
        raise InvalidEntry("check", "give an IP address or --name HOST (one of them)")
    ip = parse_ip(args.ip, "IP") if args.ip is not None else None
    name = parse_hostname(args.name.strip("[]"), "--name") if args.name is not None else None
    if args.name is not None and args.name.startswith("["):
        name = args.name  # an address literal as written in a HELO

    if _remote(args) is not None:
        from s25rbl import remote

        explanation = remote.check(_remote(args), args.ip, name)
        _show_explanation(explanation, args.json)
        return 0

    async def work(store: Any) -> dict[str, object]:
        index = await load_index(store, clock=SystemClock())
        rdns, engine = build_engine(settings, lambda: index, SystemClock())
        try:
            if ip is not None:
                return (await engine.decide(ip)).explain()
            return {"name": name, **engine.decide_name(name or "").explain()}
        finally:
            await rdns.close()

    _show_explanation(run_loop(_with_store(settings, work)), args.json)
    return 0


def _remote(args: argparse.Namespace) -> Any:
    """The API client when the command should go through a server's API, else None."""
    url = getattr(args, "api", None) or os.environ.get("S25RBL_API_URL")
    if not url:
        return None
    from s25rbl.remote import RemoteApi

    return RemoteApi(url, getattr(args, "token", None) or os.environ.get("S25RBL_API_TOKEN"))


def _show_explanation(explanation: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(explanation, indent=2))
    else:
        _print_explanation(explanation)


def _print_explanation(e: dict[str, Any]) -> None:
    state = f'listed {e["code"]}  "{e["txt"]}"' if e["listed"] else "not listed"
    print(f"{e['address']}: {state}")
    print(f"  decided by:     {e['step']}")
    if e["match"]:
        m = e["match"]
        entry = f"#{m['entry_id']} {m['list']}list {m['kind']} {m['value']!r}"
        print(f"  entry:          {entry} (matched {m['matched']})")
    if e["rule"] and not e["match"]:
        print(f"  rule:           {e['rule']}")
    if e.get("name") is not None:
        print("  (judged as a name: no lookups)")
        return
    print(f"  PTR names:      {', '.join(e['ptr_names']) or '-'}")
    print(f"  confirmed:      {', '.join(e['confirmed_names']) or '-'}")
    for note in e["lookup_notes"]:
        print(f"  lookup note:    {note}")
    print(f"  whitelist zone: {e['whitelist_code'] or 'not listed'}")
    print(f"  lookup:         {'cached' if e['cached'] else 'fresh'}")


def cmd_entries_add(settings: Settings, args: argparse.Namespace) -> int:
    from s25rbl.clock import SystemClock
    from s25rbl.service import add_entry

    spec = EntrySpec.build(args.list, args.kind, args.value, args.reason or "")
    expires = _parse_expiry(args.expires)
    api = _remote(args)
    if api is not None:
        from s25rbl import remote

        added = remote.entries_add(api, args, expires)
        print(f"added entry {added['id']}: {added['list']}list {added['kind']} {added['value']}")
        return 0

    async def work(store: Any) -> Any:
        return await add_entry(store, spec, clock=SystemClock(), creator=args.creator, expires_at=expires)

    entry = run_loop(_with_store(settings, work))
    print(f"added entry {entry.id}: {entry.list}list {entry.kind} {entry.value}")
    return 0


def cmd_entries_list(settings: Settings, args: argparse.Namespace) -> int:
    from s25rbl.clock import SystemClock
    from s25rbl.listio import entry_dict
    from s25rbl.service import list_entries
    from s25rbl.store.repository import EntryFilter

    flt = EntryFilter(
        list=ListName(args.list) if args.list else None,
        kind=EntryKind(args.kind) if args.kind else None,
        source=EntrySource(args.source) if args.source else None,
        text=args.search,
        include_expired=not args.active,
    )

    async def work(store: Any) -> Any:
        return await list_entries(store, flt, clock=SystemClock())

    api = _remote(args)
    if api is not None:
        from s25rbl import remote

        entries = remote.entries_list(api, args)
    else:
        entries = [entry_dict(e) for e in run_loop(_with_store(settings, work))]
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    for e in entries:
        expiry = f" expires {e['expires_at'][:16].replace('T', ' ')}" if e["expires_at"] else ""
        line = f"{e['id']:>6} {e['list']:<5} {e['kind']:<8} {e['value']:<40} {e['source']:<8}"
        print(f"{line} hits {e['hit_count']}{expiry}  {e['reason']}")
    return 0


def cmd_entries_remove(settings: Settings, args: argparse.Namespace) -> int:
    from s25rbl.clock import SystemClock
    from s25rbl.service import remove_entry

    async def work(store: Any) -> Any:
        return [await remove_entry(store, entry_id, clock=SystemClock()) for entry_id in args.id]

    api = _remote(args)
    if api is not None:
        from s25rbl import remote

        for entry_id in args.id:
            e = remote.entries_remove(api, entry_id)
            print(f"removed entry {e['id']}: {e['list']}list {e['kind']} {e['value']}")
        return 0
    for entry in run_loop(_with_store(settings, work)):
        print(f"removed entry {entry.id}: {entry.list}list {entry.kind} {entry.value}")
    return 0


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    from s25rbl.clock import SystemClock
    from s25rbl.listio import parse_list_file
    from s25rbl.service import import_specs

    try:
        if args.file == "-":
            text = sys.stdin.read()
        else:
            with open(args.file, encoding="utf-8") as fh:
                text = fh.read()
    except OSError as exc:
        print(f"s25rbl: import: {args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    except UnicodeDecodeError:
        print(f"s25rbl: import: {args.file}: not UTF-8 text", file=sys.stderr)
        return 1
    api = _remote(args)
    if api is not None:
        from s25rbl import remote

        added, present = remote.import_text(api, text, args.list)
        print(f"imported {added} entries from {args.file} ({present} already present)")
        return 0
    specs = parse_list_file(text, ListName(args.list) if args.list else None)

    async def work(store: Any) -> tuple[int, int]:
        return await import_specs(store, specs, clock=SystemClock(), creator=args.creator)

    added, present = run_loop(_with_store(settings, work))
    print(f"imported {added} entries from {args.file} ({present} already present)")
    return 0


def cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    from s25rbl.clock import SystemClock
    from s25rbl.listio import export_json, export_postfix, export_rbldnsd
    from s25rbl.service import list_entries
    from s25rbl.store.repository import EntryFilter

    list_ = ListName(args.list) if args.list else None
    api = _remote(args)
    if api is not None:
        from s25rbl import remote

        sys.stdout.write(remote.export(api, args.format, args.list))
        return 0

    async def work(store: Any) -> Any:
        flt = EntryFilter(list=list_, include_expired=False)
        return await list_entries(store, flt, clock=SystemClock(), limit=10_000_000)

    entries = [
        e
        for e in run_loop(_with_store(settings, work))
        if e.source is not EntrySource.LEARNED or args.learned
    ]
    if args.format == "json":
        sys.stdout.write(export_json(entries))
    elif args.format == "rbldnsd":
        sys.stdout.write(export_rbldnsd(entries, list_ or ListName.BLACK))
    else:
        sys.stdout.write(export_postfix(entries))
    return 0


def cmd_token_create(settings: Settings, args: argparse.Namespace) -> int:
    from s25rbl.clock import SystemClock
    from s25rbl.service import create_token, parse_scopes

    scopes = parse_scopes(args.scope)

    async def work(store: Any) -> str:
        return await create_token(store, args.name, scopes, clock=SystemClock(), actor="cli")

    token = run_loop(_with_store(settings, work))
    print(token)
    print(
        f"token {args.name!r} with scopes {','.join(scopes)}: shown once, stored only as a hash",
        file=sys.stderr,
    )
    return 0


def cmd_token_list(settings: Settings, args: argparse.Namespace) -> int:
    from s25rbl.service import list_tokens

    for t in run_loop(_with_store(settings, list_tokens)):
        state = f"revoked {t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "active"
        used = f"last used {t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "never used"
        print(f"{t.name:<24} {t.scopes:<24} created {t.created_at:%Y-%m-%d %H:%M}  {used}  {state}")
    return 0


def cmd_token_revoke(settings: Settings, args: argparse.Namespace) -> int:
    from s25rbl.clock import SystemClock
    from s25rbl.service import revoke_token

    async def work(store: Any) -> Any:
        return await revoke_token(store, args.name, clock=SystemClock(), actor="cli")

    run_loop(_with_store(settings, work))
    print(f"token {args.name!r} revoked (running servers stop accepting it within 30 s)")
    return 0


def cmd_expire(settings: Settings, args: argparse.Namespace) -> int:
    from s25rbl.clock import SystemClock
    from s25rbl.jobs import expire_once

    async def work(store: Any) -> dict[str, int]:
        return await expire_once(store, SystemClock(), settings.learning)

    removed = run_loop(_with_store(settings, work))
    print(", ".join(f"{count} {kind}" for kind, count in removed.items()) + " removed")
    return 0


# --- argument parsing ----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s25rbl",
        description="S25R reputation service: a DNSBL/DNSWL answering S25R verdicts computed on the fly.",
        epilog="Configuration: --config FILE or S25RBL_CONFIG, every key overridable as "
        "S25RBL_<SECTION>__<KEY> (e.g. S25RBL_DNS__ZONE=bl.example.org).",
    )
    parser.add_argument("--config", "-c", help="TOML configuration file (default: $S25RBL_CONFIG)")
    parser.add_argument("--version", action="version", version=f"s25rbl {__version__}")
    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument(
        "--api",
        metavar="URL",
        help="go through a server's REST API instead of the local store (or S25RBL_API_URL)",
    )
    remote.add_argument("--token", help="API token for --api (or S25RBL_API_TOKEN)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the DNS responder (creates and migrates the store)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("migrate", help="upgrade the database to the current schema")
    p.add_argument("--revision", default="head", help="target revision (default: head)")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser(
        "check",
        parents=[remote],
        help="explain the verdict for an address (live lookups) or, with --name, for a hostname",
    )
    p.add_argument("ip", metavar="IP", nargs="?", help="IPv4 or IPv6 address")
    p.add_argument("--name", metavar="HOST", help="judge a hostname as the hostname zone does (no lookups)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_check)

    entries = sub.add_parser("entries", help="add, list or remove whitelist/blacklist entries")
    esub = entries.add_subparsers(dest="entries_command", required=True, metavar="ACTION")
    p = esub.add_parser("add", help="add one entry", parents=[remote])
    p.add_argument("list", choices=[m.value for m in ListName])
    p.add_argument("kind", choices=[m.value for m in EntryKind])
    p.add_argument("value", help="IP, CIDR, hostname, domain (matches subdomains) or RE2 regex")
    p.add_argument("--reason", default="", help="why (kept for operators; up to 255 characters)")
    p.add_argument("--expires", help="lifetime (30d, 12h) or ISO date; default: never")
    p.add_argument("--creator", default="cli", help="recorded as the entry's creator")
    p.set_defaults(func=cmd_entries_add)
    p = esub.add_parser("list", help="list entries", parents=[remote])
    p.add_argument("--list", choices=[m.value for m in ListName])
    p.add_argument("--kind", choices=[m.value for m in EntryKind])
    p.add_argument("--source", choices=[m.value for m in EntrySource])
    p.add_argument("--search", help="text in the value or reason")
    p.add_argument("--active", action="store_true", help="leave out expired entries")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_entries_list)
    p = esub.add_parser("remove", help="remove entries by id", parents=[remote])
    p.add_argument("id", type=int, nargs="+")
    p.set_defaults(func=cmd_entries_remove)

    p = sub.add_parser(
        "import",
        parents=[remote],
        help="import a Postfix regexp table (/re/ OK, /re/ 450 ...) or plain IP/CIDR/domain lines",
        description="All or nothing: any bad line is reported with its number and nothing is imported. "
        "Entries already present are skipped.",
    )
    p.add_argument("file", metavar="FILE", help="file to read, or - for standard input")
    p.add_argument(
        "--list", choices=[m.value for m in ListName], help="list for plain lines without an action"
    )
    p.add_argument("--creator", default="import", help="recorded as the entries' creator")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser(
        "export", help="write the lists as a Postfix table, rbldnsd dataset or JSON", parents=[remote]
    )
    p.add_argument("--format", choices=["postfix", "json", "rbldnsd"], default="postfix")
    p.add_argument(
        "--list", choices=[m.value for m in ListName], help="only this list (rbldnsd: default black)"
    )
    p.add_argument("--learned", action="store_true", help="include entries learned from retries")
    p.set_defaults(func=cmd_export)
    from s25rbl import reporter

    reporter.add_parser(sub, remote)

    p = sub.add_parser("expire", help="run one expiry pass now (serve runs it on an interval)")
    p.set_defaults(func=cmd_expire)

    tokens = sub.add_parser("token", help="create, list or revoke API tokens")
    tsub = tokens.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    p = tsub.add_parser("create", help="create a token and print it (once)")
    p.add_argument("--name", required=True, help="who or what uses it, e.g. mx1-reporter")
    p.add_argument(
        "--scope",
        required=True,
        help="comma-separated: read, report, write (includes read), admin (everything)",
    )
    p.set_defaults(func=cmd_token_create)
    p = tsub.add_parser("list", help="list tokens (never their values)")
    p.set_defaults(func=cmd_token_list)
    p = tsub.add_parser("revoke", help="revoke a token by name")
    p.add_argument("name")
    p.set_defaults(func=cmd_token_revoke)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"s25rbl: {exc}", file=sys.stderr)
        return 2
    _setup_logging(settings)
    try:
        return int(args.func(settings, args))
    except InvalidEntry as exc:
        print(f"s25rbl: {exc}", file=sys.stderr)
        return 2
    except S25rblError as exc:
        print(f"s25rbl: {exc}", file=sys.stderr)
        return int(getattr(exc, "exit_status", 1))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
