#!/usr/bin/env bash
# Set up and run the whole test suite: Python dependencies in .venv, and the real programs
# the tests talk to (dig, SpamAssassin, unbound, Postfix, rspamd, rbldnsd, dnsperf, postgrey,
# nginx, headless Chromium and its chromedriver) from Debian's packages when they are missing,
# Exim unpacked into .cache/exim (scripts/unpack-exim.sh), and axe-core from npm into .cache/axe.
# PostgreSQL tests use the server at 127.0.0.1:5432 (or S25RBL_TEST_PG) and skip without one,
# except under CI.
# Extra arguments go to pytest, e.g. `scripts/test.sh -k handler`.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v dig >/dev/null || need+=(dnsutils)
command -v spamassassin >/dev/null || need+=(spamassassin)
command -v unbound >/dev/null || [ -x /usr/sbin/unbound ] || need+=(unbound)
[ -x /usr/sbin/postfix ] || need+=(postfix)
[ -x /usr/bin/rspamd ] || need+=(rspamd)
[ -x /usr/sbin/rbldnsd ] || need+=(rbldnsd)
command -v dnsperf >/dev/null || need+=(dnsperf)
[ -x /usr/sbin/postgrey ] || need+=(postgrey)  # bench/policy.py compares the policy service with it
command -v ip >/dev/null || need+=(iproute2)
command -v psql >/dev/null || need+=(postgresql-client)
[ -x /usr/sbin/nginx ] || need+=(nginx-light)  # checks deploy/nginx's TLS proxy sample
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
[ -d /usr/share/fonts/truetype/dejavu ] || need+=(fonts-dejavu-core)
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing Debian packages: ${need[*]} (run as root, or install them first)" >&2
        exit 1
    fi
    echo "installing ${need[*]} ..."
    # Postfix asks how to configure itself; the tests bring their own configuration.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Exim conflicts with Postfix as a Debian package: it is only unpacked, for the Exim tests
# (which skip without it, except under CI). S25RBL_TEST_EXIM names another Exim binary.
if [ -z "${S25RBL_TEST_EXIM:-}" ]; then
    scripts/unpack-exim.sh || echo "Exim is not available: the Exim tests will skip (or fail under CI)" >&2
fi

# The operator's page's accessibility check injects axe-core (a file, fetched once).
[ -f .cache/axe/node_modules/axe-core/axe.min.js ] ||
    npm install --silent --no-audit --no-fund --prefix .cache/axe axe-core@4 >/dev/null

scripts/bootstrap.sh "test,fast"
# The tests start s25rbl hundreds of times; where PYTHONDONTWRITEBYTECODE is set, each start
# would compile every module again (~0.4 s). Compiled once here, they are only read.
.venv/bin/python -m compileall -q -j 0 s25rbl >/dev/null
if [ -n "${S25RBL_COVERAGE:-}" ]; then
    # CI: measure the test process and every s25rbl process it starts (.ci/run reports it).
    exec .venv/bin/python -m coverage run -m pytest "$@"
fi
exec .venv/bin/python -m pytest "$@"
