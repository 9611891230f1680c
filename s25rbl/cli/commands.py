"""The CLI's commands: each takes the settings and its parsed arguments, returns the exit status.

List commands act through a ``Backend``: the local store, or a server's API with ``--api``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from s25rbl import __version__
from s25rbl.api.client import ApiClient
from s25rbl.app import in_default_folder, open_store, serve, serve_dns_only
from s25rbl.cli.backend import Backend, LocalBackend, RemoteBackend
from s25rbl.cli.output import describe_entry, print_entries, show_explanation
from s25rbl.cli.progress import Progress
from s25rbl.clock import SystemClock
from s25rbl.config import Endpoint, Settings
from s25rbl.errors import InvalidEntry
from s25rbl.jobs.expiry import expire_once, expire_policy
from s25rbl.lists.starter import check_release
from s25rbl.lists.values import (
    EntryKind,
    EntrySource,
    EntrySpec,
    ListName,
    parse_address_literal,
    parse_expiry,
    parse_hostname,
    parse_ip,
)
from s25rbl.node.runloop import run_loop
from s25rbl.service import Services
from s25rbl.service.tokens import parse_scopes
from s25rbl.store.db import Store, current_revision, describe_store, migrate, resolve_revision
from s25rbl.store.entries import EntryFilter

T = TypeVar("T")


def _remote(args: argparse.Namespace) -> ApiClient | None:
    """The API client when the command should go through a server's API, else None."""
    url = getattr(args, "api", None) or os.environ.get("S25RBL_API_URL")
    if not url:
        return None
    return ApiClient(url, getattr(args, "token", None) or os.environ.get("S25RBL_API_TOKEN"))


def _wrote(where: str) -> None:
    """Name the store (or API) a write went to, so a CLI on the wrong store is noticed at once."""
    print(f"wrote to {where}", file=sys.stderr)


def _with_backend(
    settings: Settings,
    args: argparse.Namespace,
    work: Callable[[Backend], Awaitable[T]],
    *,
    writes: bool = False,
) -> T:
    api = _remote(args)

    async def run() -> T:
        backend: Backend = RemoteBackend(api) if api is not None else await LocalBackend.open(settings)
        try:
            done = await work(backend)
        finally:
            await backend.close()
        if writes:
            _wrote(backend.where)
        return done

    return run_loop(run())


def _with_services(
    settings: Settings, work: Callable[[Services], Awaitable[T]], *, writes: bool = False
) -> T:
    async def run() -> T:
        clock = SystemClock()
        store: Store = await open_store(settings, clock)
        try:
            done = await work(Services(store, clock, settings.learning))
        finally:
            await store.close()
        if writes:
            _wrote(describe_store(store.url))
        return done

    return run_loop(run())


# --- serving and the store -----------------------------------------------------------------


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    def ready(dns: list[Endpoint], api: Endpoint | None, policy: Endpoint | None) -> None:
        where = ", ".join(str(e) for e in dns)
        only = " (DNS only)" if api is None else ""
        print(f"s25rbl {__version__} serving DNS (udp+tcp) on {where}{only}", flush=True)
        zones = f"  blocklist zone {settings.dns.zone}, whitelist zone {settings.dns.whitelist_zone}"
        if settings.dns.hostname_zone:
            zones += f", hostname zone {settings.dns.hostname_zone}"
        print(zones, flush=True)
        if policy is not None:  # before the API line: test harnesses take that one as "ready"
            mode = settings.policy.mode + (", dry run" if settings.policy.dry_run else "")
            print(f"  policy service on {policy} (mode {mode})", flush=True)
        if api is not None:
            print(f"  API on http://{api}/  store {settings.database.url}", flush=True)
            if settings.ui.enabled:
                print(f"  operator's page on http://{api}/ui/ (sign in with an API token)", flush=True)
        first = dns[0]
        print(f"  try: dig @{first.host} -p {first.port} 2.0.0.127.{settings.dns.zone} A", flush=True)

    try:
        if args.dns_only:
            run_loop(serve_dns_only(settings, ready=ready))
        else:
            run_loop(serve(settings, ready))
    except OSError as exc:
        # A port taken or not ours to bind: say which, without a traceback.
        print(f"s25rbl: cannot listen: {exc.strerror or exc} ({_listen_summary(settings)})", file=sys.stderr)
        return 1
    return 0


def _listen_summary(settings: Settings) -> str:
    dns = ", ".join(str(e) for e in settings.dns.listen)
    policy = f", policy service {settings.policy.listen}" if settings.policy.listen is not None else ""
    return f"DNS {dns}, API {settings.api.listen}{policy}"


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    url = settings.database.url
    target = resolve_revision(args.revision)  # a bad name: one line, before anything is touched
    if args.revision == "head":
        # Up to date means the starter whitelist too: a new release's entries are added here.
        async def up() -> None:
            await (await open_store(settings, SystemClock(), create=True)).close()

        with Progress("migrate") as progress:
            progress.step("bringing the store to the newest revision")
            run_loop(up())
    else:
        with Progress("migrate") as progress:
            progress.step(f"moving the store to revision {target or 'base'}")
            done = migrate(url, args.revision, create_folder=in_default_folder(url))
        print(f"{done} to {target or 'base'}", file=sys.stderr)
    print(f"database at revision {current_revision(url)}")
    _wrote(describe_store(url))
    return 0


def cmd_expire(settings: Settings, args: argparse.Namespace) -> int:
    async def work(services: Services) -> dict[str, int]:
        policy = await expire_policy(services.store, services.clock, settings.policy)
        return policy | await expire_once(services.store, services.clock, settings.learning)

    removed = _with_services(settings, work, writes=True)
    print(", ".join(f"{count} {kind}" for kind, count in removed.items()) + " removed")
    return 0


# --- verdicts ------------------------------------------------------------------------------


def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    if (args.ip is None) == (args.name is None):
        raise InvalidEntry("check", "give an IP address or --name HOST (one of them)")
    ip = str(parse_ip(args.ip, "IP")) if args.ip is not None else None
    name = None
    if args.name is not None and args.name.startswith("["):  # an address literal as in a HELO
        if parse_address_literal(args.name) is None:
            raise InvalidEntry("--name", f"{args.name!r} is not a hostname or an address literal")
        name = args.name
    elif args.name is not None:
        name = parse_hostname(args.name, "--name")
    if name is not None and (args.sender is not None or args.recipient is not None):
        raise InvalidEntry("check", "--sender and --recipient go with an IP address, not --name")
    explanation = _with_backend(
        settings, args, lambda backend: backend.check(ip, name, args.sender, args.recipient)
    )
    show_explanation(explanation, args.json)
    return 0


# --- entries -------------------------------------------------------------------------------


def cmd_entries_add(settings: Settings, args: argparse.Namespace) -> int:
    spec = EntrySpec.build(args.list, args.kind, args.value, args.reason or "")
    expires = parse_expiry(args.expires, "--expires", datetime.now(UTC)) if args.expires else None
    added = _with_backend(
        settings, args, lambda backend: backend.add_entry(spec, expires, args.creator), writes=True
    )
    print(f"added entry {added['id']}: {describe_entry(added)}")
    return 0


def cmd_entries_list(settings: Settings, args: argparse.Namespace) -> int:
    release = args.starter_release
    flt = EntryFilter(
        list=ListName(args.list) if args.list else None,
        kind=EntryKind(args.kind) if args.kind else None,
        source=EntrySource(args.source) if args.source else None,
        text=args.search,
        include_expired=not args.active,
        starter_release=check_release(release, "--starter-release") if release is not None else None,
    )
    print_entries(_with_backend(settings, args, lambda backend: backend.list_entries(flt)), args.json)
    return 0


def cmd_entries_remove(settings: Settings, args: argparse.Namespace) -> int:
    async def work(backend: Backend) -> list[dict[str, object]]:
        return [await backend.remove_entry(entry_id, "cli") for entry_id in args.id]

    for entry in _with_backend(settings, args, work, writes=True):
        print(f"removed entry {entry['id']}: {describe_entry(entry)}")
    return 0


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    with Progress("import") as progress:
        progress.step(f"reading {args.file}")
        try:
            if args.file == "-":
                text = sys.stdin.read()
            else:
                with open(args.file, encoding="utf-8") as fh:
                    text = fh.read()
        except OSError as exc:
            progress.close()
            print(f"s25rbl: import: {args.file}: {exc.strerror}", file=sys.stderr)
            return 1
        except UnicodeDecodeError:
            progress.close()
            print(f"s25rbl: import: {args.file}: not UTF-8 text", file=sys.stderr)
            return 1
        default_list = ListName(args.list) if args.list else None
        progress.step(f"checking and adding {text.count(chr(10)):,} lines")
        added, present = _with_backend(
            settings,
            args,
            lambda backend: backend.import_text(text, args.format, default_list, args.creator),
            writes=True,
        )
    print(f"imported {added} entries from {args.file} ({present} already present)")
    return 0


def cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    list_ = ListName(args.list) if args.list else None
    # The output itself shows progress on a terminal; the line is for an export to a file.
    progress = Progress("export", unit="bytes")
    progress.enabled = progress.enabled and not sys.stdout.isatty()

    async def write(backend: Backend) -> None:
        written = 0
        async for piece in backend.export(args.format, list_, args.learned):
            sys.stdout.write(piece)
            written += len(piece)
            progress.count(written)
            if args.format == "rbldnsd":
                _say_left_out(piece)

    with progress:
        _with_backend(settings, args, write)
    return 0


def _say_left_out(piece: str) -> None:
    """Repeat on stderr what an rbldnsd export's comments say it left out."""
    for line in piece.splitlines():
        if line.startswith("# ") and ("left out" in line):
            print(f"s25rbl: export: {line[2:]}", file=sys.stderr)


# --- tokens --------------------------------------------------------------------------------


def cmd_token_create(settings: Settings, args: argparse.Namespace) -> int:
    scopes = parse_scopes(args.scope)
    token = _with_services(settings, lambda s: s.tokens.create(args.name, scopes, actor="cli"), writes=True)
    print(token)
    print(
        f"token {args.name!r} with scopes {','.join(scopes)}: shown once, stored only as a hash",
        file=sys.stderr,
    )
    return 0


def cmd_token_list(settings: Settings, args: argparse.Namespace) -> int:
    for t in _with_services(settings, lambda s: s.tokens.all()):
        state = f"revoked {t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "active"
        used = f"last used {t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "never used"
        print(f"{t.name:<24} {t.scopes:<24} created {t.created_at:%Y-%m-%d %H:%M}  {used}  {state}")
    return 0


def cmd_token_revoke(settings: Settings, args: argparse.Namespace) -> int:
    _with_services(settings, lambda s: s.tokens.revoke(args.name, actor="cli"), writes=True)
    print(f"token {args.name!r} revoked (running servers stop accepting it within 30 s)")
    return 0
