"""The ``s25rbl`` command: serve, migrate, check, entries, import, export, report-maillog,
learned, suggestions, audit, token, and its own man page and shell completion (``man``,
``completion``).

Exit status: 0 done, 1 the operation failed (duplicate, not found, store unavailable, bad
list file), 2 bad usage or configuration.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from s25rbl.cli.parser import build_parser
from s25rbl.config import Settings, load_settings
from s25rbl.errors import ConfigError, S25rblError

__all__ = ["build_parser", "main"]


def _setup_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log.level.upper(),
        format="%(asctime)s s25rbl %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Alembic narrates every step at INFO; an operator only needs to hear of problems.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # it narrates every run at INFO


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "settings_free", False):  # man, completion: the parser is all they need
        return int(args.func(None, args))
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"s25rbl: {exc}", file=sys.stderr)
        return exc.exit_status
    _setup_logging(settings)
    for warning in settings.warnings:
        logging.getLogger("s25rbl.config").warning("%s", warning)
    try:
        return int(args.func(settings, args))
    except S25rblError as exc:
        print(f"s25rbl: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        return 130
