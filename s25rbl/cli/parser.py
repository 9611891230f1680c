"""The one argparse definition of the ``s25rbl`` command (``--help`` is made from it)."""

from __future__ import annotations

import argparse

from s25rbl import __version__
from s25rbl.cli.commands import (
    cmd_check,
    cmd_entries_add,
    cmd_entries_list,
    cmd_entries_remove,
    cmd_expire,
    cmd_export,
    cmd_import,
    cmd_migrate,
    cmd_serve,
    cmd_token_create,
    cmd_token_list,
    cmd_token_revoke,
)
from s25rbl.cli.manpage import add_parsers as add_manual_parsers
from s25rbl.cli.report_maillog import add_parser as add_report_maillog_parser
from s25rbl.cli.review import add_parsers as add_review_parsers
from s25rbl.lists.formats import FORMATS_IN, FORMATS_OUT
from s25rbl.lists.values import EntryKind, EntrySource, ListName


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="s25rbl",
        description="S25R reputation service: a DNSBL/DNSWL answering S25R verdicts computed on the fly.",
        epilog="Configuration: --config FILE (before or after the command), else S25RBL_CONFIG, else "
        "/etc/s25rbl/s25rbl.toml when it exists; every key overridable as S25RBL_<SECTION>__<KEY> "
        "(e.g. S25RBL_DNS__ZONE=bl.example.org). man s25rbl: every command and option.",
    )
    _global_options(parser, None)
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
    p.add_argument(
        "--dns-only",
        action="store_true",
        help="answer DNS only, without the API and the expiry job, on a store set up already "
        "(SO_REUSEPORT: for a supervisor running DNS processes itself, or benchmarks)",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "migrate",
        help="create or upgrade the store to the current schema and add the starter whitelist "
        "entries this release brings (unless lists.builtin_whitelist = false)",
    )
    p.add_argument(
        "--revision",
        default="head",
        metavar="REV",
        help="move the schema to REV, downgrading when it is older than the store (0001 ... 0007, "
        "or base: no tables; default: head, with the starter entries; any other: the schema only)",
    )
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser(
        "check",
        parents=[remote],
        help="explain the verdict for an address (live lookups) and what the policy service would "
        "do with it, or, with --name, the verdict for a hostname",
    )
    p.add_argument("ip", metavar="IP", nargs="?", help="IPv4 or IPv6 address")
    p.add_argument("--name", metavar="HOST", help="judge a hostname as the hostname zone does (no lookups)")
    p.add_argument(
        "--sender", metavar="S", help="with IP: the envelope sender of the policy service's triplet"
    )
    p.add_argument("--recipient", metavar="R", help="with IP: the recipient of the policy service's triplet")
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
    p.add_argument(
        "--starter-release",
        metavar="RELEASE",
        help="only the starter whitelist entries that this s25rbl release added (e.g. 0.2.0)",
    )
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
    p.add_argument(
        "--format",
        choices=FORMATS_IN,
        default="postfix",
        help="postfix: a Postfix regexp table or plain lines VALUE [ACTION [text]] [# reason] "
        "(default); csv: list,kind,value[,reason]; "
        "json: an array of entry objects, as exported",
    )
    p.add_argument("--creator", default="import", help="recorded as the entries' creator")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser(
        "export", help="write the lists as a Postfix table, rbldnsd dataset or JSON", parents=[remote]
    )
    p.add_argument("--format", choices=FORMATS_OUT, default="postfix")
    p.add_argument(
        "--list", choices=[m.value for m in ListName], help="only this list (rbldnsd: default black)"
    )
    p.add_argument("--learned", action="store_true", help="include entries learned from retries")
    p.set_defaults(func=cmd_export)
    add_report_maillog_parser(sub, remote)
    add_review_parsers(sub, remote)

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
    add_manual_parsers(sub, parser)  # after every other command: both walk this parser
    for command in commands(parser):
        _global_options(command, argparse.SUPPRESS)
    return parser


CONFIG_HELP = (
    "TOML configuration file (default: $S25RBL_CONFIG, else /etc/s25rbl/s25rbl.toml when it "
    "exists, else built-in defaults)"
)


def _global_options(parser: argparse.ArgumentParser, default: str | None) -> None:
    """The options every command takes, before or after its name: on a subcommand they default
    to SUPPRESS, so one given before the name is not reset by the subcommand's own default."""
    parser.add_argument("--config", "-c", metavar="FILE", default=default, help=CONFIG_HELP)


def commands(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every subcommand parser below ``parser``, depth first (``entries``, ``entries add``, ...)."""
    found: list[argparse.ArgumentParser] = []
    for sub in subcommands(parser).values():
        found.append(sub)
        found.extend(commands(sub))
    return found


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommands of ``parser`` by name (none for a leaf command)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}
