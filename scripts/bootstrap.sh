#!/usr/bin/env bash
# Shared setup for scripts/serve.sh and scripts/test.sh: a virtualenv in .venv with s25rbl
# installed in editable mode. Idempotent, so each command can simply run it first.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "s25rbl needs Python 3.11 or newer ($PYTHON is $("$PYTHON" -V 2>&1))" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
extras="${1:-fast}"
stamp=".venv/.s25rbl-installed-$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ s25rbl/dns/_fastpath.c -nt "$stamp" ] ||
    [ hatch_build.py -nt "$stamp" ]; then  # (the install compiles the C fast path)
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[$extras]"
    touch "$stamp"
fi
