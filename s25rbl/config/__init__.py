"""One frozen Settings, built once from a TOML file plus ``S25RBL_<SECTION>__<KEY>`` variables.

Every value is validated here; a bad one raises ConfigError naming the key, so ``serve``
stops with one line and exit status 2 instead of failing later.
"""

from __future__ import annotations

import os
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from s25rbl.config.values import Endpoint as Endpoint  # re-exported: where every part imports it from
from s25rbl.config.values import (
    parse_bool,
    parse_choice,
    parse_endpoint,
    parse_level,
    parse_listen,
    parse_names,
    parse_networks,
    parse_number,
    parse_optional_endpoint,
    parse_secure_cookie,
    parse_upstreams,
    parse_url,
)
from s25rbl.config.values import parse_zone as parse_zone  # re-exported
from s25rbl.config.values import system_resolvers as system_resolvers  # re-exported
from s25rbl.errors import ConfigError

ENV_PREFIX = "S25RBL_"
CONFIG_ENV = "S25RBL_CONFIG"
SYSTEM_CONFIG = "/etc/s25rbl/s25rbl.toml"  # read when no file is named: the units' configuration
SYSTEM_CONFIG_ENV = "S25RBL_SYSTEM_CONFIG"


@dataclass(frozen=True, slots=True)
class DnsSettings:
    """``[dns]``: listeners, zones, TTLs, answer sizes and caches."""

    listen: tuple[Endpoint, ...] = (Endpoint("127.0.0.1", 5300), Endpoint("::1", 5300))
    zone: str = "bl.s25rbl.test"
    whitelist_zone: str = "wl.s25rbl.test"
    hostname_zone: str = "hl.s25rbl.test"  # "" turns the hostname zone off
    ip_literal_names: bool = False
    nameservers: tuple[str, ...] = ()
    hostmaster: str = ""
    ttl: int = 300
    negative_ttl: int = 300
    tempfail_ttl: int = 30
    tcp_idle_timeout: float = 10.0
    tcp_max_connections: int = 1024
    tcp_max_per_prefix: int = 64  # per client /24 or /64
    udp_receive_buffer: int = 4 * 1024 * 1024  # octets asked of the kernel (0: its default)
    udp_batch: int = 64  # datagrams per recvmmsg/sendmmsg call (0 or 1: one per recvfrom/sendto)
    fast_path: bool = True  # cached UDP answers in C, where the extension was built
    max_udp_payload: int = 1232
    workers: int = 1
    answer_cache_bytes: int = 64 * 1024 * 1024
    answer_cache_size: int | None = None  # deprecated: an extra cap on entries (0: off)


@dataclass(frozen=True, slots=True)
class ResolverSettings:
    """``[resolver]``: the upstream resolvers and the limits of reverse lookups."""

    upstreams: tuple[Endpoint, ...] = ()
    timeout: float = 1.5
    max_names: int = 5
    max_inflight: int = 512
    cache_bytes: int = 64 * 1024 * 1024
    cache_size: int | None = None  # deprecated: an extra cap on entries (0: off)


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    """``[database]``: where the store is."""

    url: str = ""


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """``[api]``: the REST API's address and limits."""

    listen: Endpoint = field(default_factory=lambda: Endpoint("127.0.0.1", 8300))
    metrics_public: bool = True
    max_body: int = 8 * 1024 * 1024  # the largest body (imports); other routes take far less
    max_concurrent: int = 8  # API requests at work at once; more wait briefly, then get 503


@dataclass(frozen=True, slots=True)
class ListSettings:
    """``[lists]``: the starter whitelist, and how often nodes look for list changes."""

    builtin_whitelist: bool = True
    refresh_interval: float = 1.0


@dataclass(frozen=True, slots=True)
class LearningSettings:
    """``[learning]``: what counts as a retry, when an address is learned, and expiry."""

    min_interval: float = 60.0  # seconds between two attempts for the second to be a retry
    window: float = 48 * 3600.0  # retries count within this window; older reports expire
    retries: int = 2  # retries that make an address learned
    lifetime: float = 35 * 86400.0  # a learned address's lifetime, renewed while it is seen
    auto_approve_pools: bool = False  # turn pool suggestions into domain entries unreviewed
    expire_interval: float = 300.0  # seconds between expiry runs
    reports_per_minute: float = 6000.0  # from one reporter (token); beyond: 429, Retry-After
    address_reports_per_minute: float = 60.0  # about one client address, from all reporters


@dataclass(frozen=True, slots=True)
class UiSettings:
    """``[ui]``: the operator's page under ``/ui/`` on the API's address: its sessions, its
    cookies behind a TLS proxy, and the figures it keeps in memory."""

    enabled: bool = True
    session_idle: float = 1800.0  # seconds without a request before a session ends
    session_lifetime: float = 43200.0  # seconds after sign-in that a session ends regardless
    secure_cookie: str = "auto"  # auto: Secure when the request came over TLS; true; false
    trusted_proxies: tuple[str, ...] = ()  # addresses/networks whose X-Forwarded-* is believed
    sample_interval: float = 60.0  # seconds between two samples of the node's counters
    history: int = 1440  # samples kept in memory (1440 x 60 s: a day)


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """``[policy]``: the Postfix policy service (product §7): Rgrey, Starpit and taRgrey."""

    # None: no policy service.
    listen: Endpoint | None = field(default_factory=lambda: Endpoint("127.0.0.1", 10030))
    mode: str = "targrey"  # s25r, rgrey, starpit, targrey
    tarpit: int = 65  # seconds Postfix waits (SLEEP) at the first RCPT of a listed client
    delay: float = 300.0  # a greylisted triplet passes when retried this much later ...
    retry_window: float = 2 * 86400.0  # ... and within this window; unretried triplets expire
    max_age: float = 35 * 86400.0  # passed triplets expire this long after last seen
    learn_after: int = 2  # passes (tarpit survived, greylist passed) that make an address learned
    ipv4_prefix: int = 24  # a triplet's client network
    ipv6_prefix: int = 64
    max_tarpits: int = 50  # sessions tarpitted at once per MTA; beyond that, greylist instead
    dry_run: bool = False  # decide, store, log and count, but answer DUNNO
    on_tempfail: str = "dunno"  # the client's reverse lookup failed for now: dunno, or defer
    idle_timeout: float = 600.0  # seconds a connection may sit idle (Postfix closes at 300 s)
    max_connections: int = 1000  # open connections; more are closed at once (Postfix fails open)
    allow: tuple[str, ...] = ("127.0.0.0/8", "::1/128")  # the MTAs that may ask: a client can teach
    cache_size: int = 50_000  # entries of each policy cache per node (at most ~500 bytes each)


@dataclass(frozen=True, slots=True)
class LogSettings:
    """``[log]``: how much the server says."""

    level: str = "info"


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting, validated; built once (``load_settings``) and handed to every part."""

    dns: DnsSettings = field(default_factory=DnsSettings)
    resolver: ResolverSettings = field(default_factory=ResolverSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    lists: ListSettings = field(default_factory=ListSettings)
    learning: LearningSettings = field(default_factory=LearningSettings)
    ui: UiSettings = field(default_factory=UiSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    log: LogSettings = field(default_factory=LogSettings)
    source: str = "defaults"
    warnings: tuple[str, ...] = ()  # said once at start: deprecated keys in use


_PARSERS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "dns": {
        "listen": parse_listen,
        "zone": parse_zone,
        "whitelist_zone": parse_zone,
        "hostname_zone": lambda v: parse_zone(v) if str(v).strip(" .") else "",
        "ip_literal_names": parse_bool,
        "nameservers": parse_names,
        "hostmaster": lambda v: parse_zone(str(v).replace("@", ".")),
        "ttl": parse_number(int, 0, 604800),
        "negative_ttl": parse_number(int, 0, 86400),
        "tempfail_ttl": parse_number(int, 0, 3600),
        "tcp_idle_timeout": parse_number(float, 0.1, 3600),
        "tcp_max_connections": parse_number(int, 1, 1_000_000),
        "tcp_max_per_prefix": parse_number(int, 1, 1_000_000),
        "udp_receive_buffer": parse_number(int, 0, 1 << 30),
        "udp_batch": parse_number(int, 0, 1024),
        "fast_path": parse_bool,
        "max_udp_payload": parse_number(int, 512, 4096),
        "workers": parse_number(int, 1, 64),
        "answer_cache_bytes": parse_number(int, 0, 1 << 40),
        "answer_cache_size": parse_number(int, 0, 50_000_000),
    },
    "resolver": {
        "upstreams": parse_upstreams,
        "timeout": parse_number(float, 0.05, 30),
        "max_names": parse_number(int, 1, 32),
        "max_inflight": parse_number(int, 1, 100_000),
        "cache_bytes": parse_number(int, 0, 1 << 40),
        "cache_size": parse_number(int, 0, 50_000_000),
    },
    "database": {"url": parse_url},
    "api": {
        "listen": lambda v: parse_endpoint(str(v)),
        "metrics_public": parse_bool,
        "max_body": parse_number(int, 1024, 256 * 1024 * 1024),
        "max_concurrent": parse_number(int, 1, 256),
    },
    "lists": {
        "builtin_whitelist": parse_bool,
        "refresh_interval": parse_number(float, 0.05, 3600),
    },
    "learning": {
        "min_interval": parse_number(float, 0, 86400),
        "window": parse_number(float, 60, 30 * 86400),
        "retries": parse_number(int, 1, 100),
        "lifetime": parse_number(float, 60, 3650 * 86400),
        "auto_approve_pools": parse_bool,
        "expire_interval": parse_number(float, 1, 86400),
        "reports_per_minute": parse_number(float, 1, 1e7),
        "address_reports_per_minute": parse_number(float, 1, 1e7),
    },
    "ui": {
        "enabled": parse_bool,
        "session_idle": parse_number(float, 60, 7 * 86400),
        "session_lifetime": parse_number(float, 300, 30 * 86400),
        "secure_cookie": parse_secure_cookie,
        "trusted_proxies": parse_networks,
        "sample_interval": parse_number(float, 1, 3600),
        "history": parse_number(int, 10, 100_000),
    },
    "policy": {
        "listen": parse_optional_endpoint,
        "mode": parse_choice("s25r", "rgrey", "starpit", "targrey"),
        # Below the 5 minutes RFC 5321 gives a client to wait for the RCPT reply.
        "tarpit": parse_number(int, 1, 299),
        "delay": parse_number(float, 0, 86400),
        "retry_window": parse_number(float, 60, 30 * 86400),
        "max_age": parse_number(float, 3600, 3650 * 86400),
        "learn_after": parse_number(int, 1, 100),
        "ipv4_prefix": parse_number(int, 8, 32),
        "ipv6_prefix": parse_number(int, 16, 128),
        "max_tarpits": parse_number(int, 0, 100_000),
        "dry_run": parse_bool,
        "on_tempfail": parse_choice("dunno", "defer"),
        "idle_timeout": parse_number(float, 1, 86400),
        "max_connections": parse_number(int, 1, 100_000),
        "allow": parse_networks,
        "cache_size": parse_number(int, 1000, 50_000_000),
    },
    "log": {"level": parse_level},
}

_SECTION_TYPES: dict[str, type[Any]] = {
    "dns": DnsSettings,
    "resolver": ResolverSettings,
    "database": DatabaseSettings,
    "api": ApiSettings,
    "lists": ListSettings,
    "learning": LearningSettings,
    "ui": UiSettings,
    "policy": PolicySettings,
    "log": LogSettings,
}


def default_state_dir(env: Mapping[str, str]) -> Path:
    """Where the embedded SQLite store lives: systemd's StateDirectory, else XDG state."""
    if env.get("STATE_DIRECTORY"):
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]) / "s25rbl"
    return Path.home() / ".local" / "state" / "s25rbl"


def config_file(
    path: str | os.PathLike[str] | None, env: Mapping[str, str]
) -> tuple[str | os.PathLike[str] | None, str]:
    """The configuration file to read and what named it (for errors): ``--config``, else
    ``S25RBL_CONFIG``, else the system file ``/etc/s25rbl/s25rbl.toml`` (the one the systemd
    units read) when it exists, else none: the built-in defaults. ``S25RBL_SYSTEM_CONFIG``
    moves the system file (for tests and unusual layouts); it is never required to exist."""
    if path is not None:
        return path, "--config"
    if env.get(CONFIG_ENV):
        return env[CONFIG_ENV], CONFIG_ENV
    system = env.get(SYSTEM_CONFIG_ENV) or SYSTEM_CONFIG
    if os.path.isfile(system):
        return system, system
    return None, ""


def load_settings(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build and validate the Settings: defaults, then the TOML file, then the environment."""
    env = os.environ if environ is None else environ
    raw: dict[str, dict[str, Any]] = {}
    source = "defaults"
    config_path, given_by = config_file(path, env)
    if config_path:
        try:
            with open(config_path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(given_by, f"{config_path}: no such file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(given_by, f"{config_path}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(given_by, f"{config_path}: {exc.strerror}") from None
        for section, table in data.items():
            if section not in _PARSERS:
                known = ", ".join(sorted(_PARSERS))
                raise ConfigError(section, f"unknown section (known: {known})")
            if not isinstance(table, dict):
                raise ConfigError(section, "must be a table, e.g. [" + section + "]")
            raw[section] = dict(table)
        source = str(config_path)
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        if section not in _PARSERS or key not in _PARSERS[section]:
            raise ConfigError(name, "not a known setting")
        raw.setdefault(section, {})[key] = value

    sections: dict[str, Any] = {}
    warnings = [  # deprecated keys, still read
        f"{sect}.{old} is deprecated: it only caps the number of entries; {sect}.{new} bounds the bytes"
        for sect, old, new in (
            ("dns", "answer_cache_size", "answer_cache_bytes"),
            ("resolver", "cache_size", "cache_bytes"),
        )
        if old in raw.get(sect, {})
    ]
    for section, parsers in _PARSERS.items():
        values: dict[str, Any] = {}
        for key, value in raw.get(section, {}).items():
            if key not in parsers:
                known = ", ".join(sorted(parsers))
                raise ConfigError(f"{section}.{key}", f"unknown key (known: {known})")
            try:
                values[key] = parsers[key](value)
            except ValueError as exc:
                raise ConfigError(f"{section}.{key}", str(exc)) from None
        sections[section] = _SECTION_TYPES[section](**values)

    dns: DnsSettings = sections["dns"]
    zones = [("dns.zone", dns.zone), ("dns.whitelist_zone", dns.whitelist_zone)]
    if dns.hostname_zone:
        zones.append(("dns.hostname_zone", dns.hostname_zone))
    for i, (_, a) in enumerate(zones):
        for key, b in zones[i + 1 :]:
            if a == b or a.endswith("." + b) or b.endswith("." + a):
                raise ConfigError(key, f"{a!r} and {b!r} overlap; use disjoint zones")
    if not dns.nameservers:
        fqdn = socket.getfqdn().lower().rstrip(".") or "localhost"
        sections["dns"] = replace(dns, nameservers=(fqdn if "." in fqdn else "localhost",))
    if not sections["dns"].hostmaster:
        sections["dns"] = replace(sections["dns"], hostmaster="hostmaster." + dns.zone)
    resolver: ResolverSettings = sections["resolver"]
    if not resolver.upstreams:
        upstreams = system_resolvers()
        if not upstreams:
            raise ConfigError("resolver.upstreams", "empty and /etc/resolv.conf names no nameserver")
        sections["resolver"] = replace(resolver, upstreams=upstreams)
    policy: PolicySettings = sections["policy"]
    if policy.delay >= policy.retry_window:
        raise ConfigError("policy.delay", f"{policy.delay:g} s must be shorter than policy.retry_window")
    if policy.retry_window > policy.max_age:
        raise ConfigError("policy.max_age", "must be at least policy.retry_window")
    database: DatabaseSettings = sections["database"]
    if not database.url:
        sections["database"] = DatabaseSettings(url=f"sqlite:///{default_state_dir(env) / 's25rbl.db'}")
    return Settings(source=source, warnings=tuple(warnings), **sections)
