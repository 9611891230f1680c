"""One frozen Settings, built once from a TOML file plus ``S25RBL_<SECTION>__<KEY>`` variables.

Every value is validated here; a bad one raises ConfigError naming the key, so ``serve``
stops with one line and exit status 2 instead of failing later.
"""

from __future__ import annotations

import os
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s25rbl.config_values import Endpoint, parse_endpoint, parse_zone
from s25rbl.config_values import as_bool as _as_bool
from s25rbl.config_values import choice as _choice
from s25rbl.config_values import level as _level
from s25rbl.config_values import listen_list as _listen_list
from s25rbl.config_values import names as _names
from s25rbl.config_values import networks as _networks
from s25rbl.config_values import number as _number
from s25rbl.config_values import optional_endpoint as _optional_endpoint
from s25rbl.config_values import upstreams as _upstreams
from s25rbl.config_values import url as _url
from s25rbl.errors import ConfigError

__all__ = ["ENV_PREFIX", "Endpoint", "Settings", "load_settings", "parse_endpoint", "parse_zone"]

ENV_PREFIX = "S25RBL_"
CONFIG_ENV = "S25RBL_CONFIG"


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
    max_udp_payload: int = 1232
    workers: int = 1
    answer_cache_size: int = 250_000


@dataclass(frozen=True, slots=True)
class ResolverSettings:
    """``[resolver]``: the upstream resolvers and the limits of reverse lookups."""

    upstreams: tuple[Endpoint, ...] = ()
    timeout: float = 1.5
    max_names: int = 5
    max_inflight: int = 512
    cache_size: int = 200_000


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    """``[database]``: where the store is."""

    url: str = ""


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """``[api]``: the REST API's address and limits."""

    listen: Endpoint = Endpoint("127.0.0.1", 8300)
    metrics_public: bool = True
    max_body: int = 8 * 1024 * 1024


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


@dataclass(frozen=True, slots=True)
class PolicySettings:
    """``[policy]``: the Postfix policy service (product §7): Rgrey, Starpit and taRgrey."""

    listen: Endpoint | None = Endpoint("127.0.0.1", 10030)  # None: no policy service
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
    policy: PolicySettings = field(default_factory=PolicySettings)
    log: LogSettings = field(default_factory=LogSettings)
    source: str = "defaults"


_PARSERS: dict[str, dict[str, Callable[[Any], Any]]] = {
    "dns": {
        "listen": _listen_list,
        "zone": parse_zone,
        "whitelist_zone": parse_zone,
        "hostname_zone": lambda v: parse_zone(v) if str(v).strip(" .") else "",
        "ip_literal_names": _as_bool,
        "nameservers": _names,
        "hostmaster": lambda v: parse_zone(str(v).replace("@", ".")),
        "ttl": _number(int, 0, 604800),
        "negative_ttl": _number(int, 0, 86400),
        "tempfail_ttl": _number(int, 0, 3600),
        "tcp_idle_timeout": _number(float, 0.1, 3600),
        "max_udp_payload": _number(int, 512, 4096),
        "workers": _number(int, 1, 64),
        "answer_cache_size": _number(int, 0, 50_000_000),
    },
    "resolver": {
        "upstreams": _upstreams,
        "timeout": _number(float, 0.05, 30),
        "max_names": _number(int, 1, 32),
        "max_inflight": _number(int, 1, 100_000),
        "cache_size": _number(int, 0, 50_000_000),
    },
    "database": {"url": _url},
    "api": {
        "listen": lambda v: parse_endpoint(str(v)),
        "metrics_public": _as_bool,
        "max_body": _number(int, 1024, 256 * 1024 * 1024),
    },
    "lists": {
        "builtin_whitelist": _as_bool,
        "refresh_interval": _number(float, 0.05, 3600),
    },
    "learning": {
        "min_interval": _number(float, 0, 86400),
        "window": _number(float, 60, 30 * 86400),
        "retries": _number(int, 1, 100),
        "lifetime": _number(float, 60, 3650 * 86400),
        "auto_approve_pools": _as_bool,
        "expire_interval": _number(float, 1, 86400),
    },
    "policy": {
        "listen": _optional_endpoint,
        "mode": _choice("s25r", "rgrey", "starpit", "targrey"),
        # Below the 5 minutes RFC 5321 gives a client to wait for the RCPT reply.
        "tarpit": _number(int, 1, 299),
        "delay": _number(float, 0, 86400),
        "retry_window": _number(float, 60, 30 * 86400),
        "max_age": _number(float, 3600, 3650 * 86400),
        "learn_after": _number(int, 1, 100),
        "ipv4_prefix": _number(int, 8, 32),
        "ipv6_prefix": _number(int, 16, 128),
        "max_tarpits": _number(int, 0, 100_000),
        "dry_run": _as_bool,
        "on_tempfail": _choice("dunno", "defer"),
        "idle_timeout": _number(float, 1, 86400),
        "max_connections": _number(int, 1, 100_000),
        "allow": _networks,
        "cache_size": _number(int, 1000, 50_000_000),
    },
    "log": {"level": _level},
}

_SECTION_TYPES: dict[str, type[Any]] = {
    "dns": DnsSettings,
    "resolver": ResolverSettings,
    "database": DatabaseSettings,
    "api": ApiSettings,
    "lists": ListSettings,
    "learning": LearningSettings,
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


def system_resolvers(path: str = "/etc/resolv.conf") -> tuple[Endpoint, ...]:
    """The nameservers of resolv.conf (port 53); loopback 127.0.0.53 stubs included."""
    found: list[Endpoint] = []
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ()
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                found.append(parse_endpoint(parts[1].split("%")[0], default_port=53))
            except ValueError:
                continue
    return tuple(found)


def load_settings(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build and validate the Settings: defaults, then the TOML file, then the environment."""
    env = os.environ if environ is None else environ
    raw: dict[str, dict[str, Any]] = {}
    source = "defaults"
    config_path = path if path is not None else env.get(CONFIG_ENV)
    if config_path:
        try:
            with open(config_path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError("--config", f"{config_path}: no such file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("--config", f"{config_path}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError("--config", f"{config_path}: {exc.strerror}") from None
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
        sections["dns"] = _replace(dns, nameservers=(fqdn if "." in fqdn else "localhost",))
    if not sections["dns"].hostmaster:
        sections["dns"] = _replace(sections["dns"], hostmaster="hostmaster." + dns.zone)
    resolver: ResolverSettings = sections["resolver"]
    if not resolver.upstreams:
        upstreams = system_resolvers()
        if not upstreams:
            raise ConfigError("resolver.upstreams", "empty and /etc/resolv.conf names no nameserver")
        sections["resolver"] = _replace(resolver, upstreams=upstreams)
    policy: PolicySettings = sections["policy"]
    if policy.delay >= policy.retry_window:
        raise ConfigError("policy.delay", f"{policy.delay:g} s must be shorter than policy.retry_window")
    if policy.retry_window > policy.max_age:
        raise ConfigError("policy.max_age", "must be at least policy.retry_window")
    database: DatabaseSettings = sections["database"]
    if not database.url:
        sections["database"] = DatabaseSettings(url=f"sqlite:///{default_state_dir(env) / 's25rbl.db'}")
    return Settings(source=source, **sections)


def _replace(obj: Any, **changes: Any) -> Any:
    from dataclasses import replace

    return replace(obj, **changes)
