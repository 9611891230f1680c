#!/usr/bin/env bash
# Set up and run s25rbl on the embedded default: SQLite store, DNS on 127.0.0.1:5300 and
# [::1]:5300, zones bl.s25rbl.test and wl.s25rbl.test. Extra arguments go to `s25rbl`,
# e.g. `scripts/serve.sh --config s25rbl.toml`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh fast
exec .venv/bin/s25rbl "$@" serve
