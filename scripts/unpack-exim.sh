#!/usr/bin/env bash
# Unpack Debian's Exim daemon into .cache/exim for the interop tests (tests/integration/test_exim.py).
#
# Debian's exim4 packages conflict with postfix (both provide mail-transport-agent), and the
# tests need both, so Exim is never installed: exim4-daemon-light is downloaded and unpacked
# with `dpkg -x`, and the tests run .cache/exim/usr/sbin/exim4 with a configuration of their
# own. What the binary needs besides is set up here too, each part only when it is missing:
#   - its runtime libraries (plain Debian library packages, installed with apt-get);
#   - the system user Debian-exim, which the binary looks up by name before it reads any
#     configuration (exim4-base would create it).
# Idempotent; needs root. Without root it says what is missing and exits 1 (the Exim tests
# then skip, or fail under S25RBL_CI).
set -euo pipefail
cd "$(dirname "$0")/.."

cache=.cache/exim
binary="$cache/usr/sbin/exim4"
exim_user=Debian-exim

missing_libraries() {
    # Library packages the unpacked daemon depends on that dpkg does not have installed.
    local deb="$1" dep
    dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed -e 's/|.*//' -e 's/(.*)//' -e 's/[[:space:]]//g' |
        grep '^lib' | while read -r dep; do
        dpkg-query -W -f='${Status}\n' "$dep" 2>/dev/null | grep -x 'install ok installed' >/dev/null ||
            echo "$dep"
    done
}

libraries_missing() {
    ldd "$binary" 2>&1 | grep -F 'not found' >/dev/null
}

todo=()
[ -x "$binary" ] || todo+=("unpack exim4-daemon-light into $cache")
[ -x "$binary" ] && libraries_missing && todo+=("install its missing libraries")
getent passwd "$exim_user" >/dev/null || todo+=("create the system user $exim_user")
[ ${#todo[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "Exim for the tests: need root to ${todo[*]}" >&2
    exit 1
fi

if ! getent passwd "$exim_user" >/dev/null; then
    echo "creating the system user $exim_user (the Exim binary needs it) ..."
    group=(--user-group)
    getent group "$exim_user" >/dev/null && group=(--gid "$exim_user")
    useradd --system "${group[@]}" --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin "$exim_user"
fi

if [ ! -x "$binary" ] || libraries_missing; then
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    echo "downloading and unpacking exim4-daemon-light into $cache ..."
    apt-get update -qq
    (cd "$work" && apt-get download -qq -o APT::Sandbox::User=root exim4-daemon-light)
    deb="$(echo "$work"/exim4-daemon-light_*.deb)"
    mapfile -t libraries < <(missing_libraries "$deb")
    if [ ${#libraries[@]} -gt 0 ]; then
        echo "installing ${libraries[*]} ..."
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${libraries[@]}" >/dev/null
    fi
    # Unpack beside the cache and move it into place, so an interrupted run leaves no half.
    mkdir -p "$(dirname "$cache")"
    rm -rf "$cache.new"
    dpkg -x "$deb" "$cache.new"
    # The package's binary is setuid root; the tests start it as root and need no setuid copy
    # lying in a work tree.
    chmod u-s "$cache.new/usr/sbin/exim4"
    rm -rf "$cache"
    mv "$cache.new" "$cache"
    if libraries_missing; then
        ldd "$binary" | grep -F 'not found' >&2
        echo "the unpacked Exim still misses these libraries" >&2
        exit 1
    fi
fi
"$binary" -C /dev/null -bV 2>/dev/null | sed -n 1p
