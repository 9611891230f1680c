"""The real ``s25rbl`` command as a child process, with only the environment a test gives it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

Cli = Callable[..., subprocess.CompletedProcess[str]]


def cli_env(home: Path, **env: str) -> dict[str, str]:
    """The environment of ``make_cli``'s commands."""
    # Only what the child needs; coverage's and the import path's variables pass through.
    passed = {k: v for k, v in os.environ.items() if k.startswith("COVERAGE_") or k == "PYTHONPATH"}
    return {
        **passed,
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "S25RBL_RESOLVER__UPSTREAMS": "127.0.0.1:9",
        "S25RBL_LISTS__BUILTIN_WHITELIST": "false",
        "S25RBL_SYSTEM_CONFIG": str(home / "etc" / "s25rbl.toml"),
        **env,
    }


def make_cli(home: Path, **env: str) -> Cli:
    """A runner of ``s25rbl ARGS`` with ``HOME`` at ``home``, no upstream resolver, no starter
    whitelist, and never the machine's own ``/etc/s25rbl/s25rbl.toml`` (``S25RBL_SYSTEM_CONFIG``
    points into ``home``); ``env`` adds to that, and each call may add more."""
    base = cli_env(home, **env)

    def run(
        *args: str, input: str | None = None, timeout: float = 60, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "s25rbl", *args],
            capture_output=True,
            text=True,
            env={**base, **extra},
            input=input,
            timeout=timeout,
        )

    return run
