"""One frozen Settings, built once from a TOML file plus ``S25RBL_<SECTION>__<KEY>`` variables.

Every value is validated here; a bad one raises ConfigError naming the key, so ``serve``
stops with one line and exit status 2 instead of failing later.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from s25rbl.errors import ConfigError

ENV_PREFIX = "S25RBL_"
CONFIG_ENV = "S25RBL_CONFIG"

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An address and port to listen on or send to."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


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
    log: LogSettings = field(default_factory=LogSettings)
    source: str = "defaults"


# --- value parsers: each raises ValueError with a message for the user -------------------


def parse_endpoint(text: str, default_port: int | None = None) -> Endpoint:
    """``1.2.3.4:53``, ``[::1]:53``, or a bare address when a default port applies."""
    text = text.strip()
    host, port_text = text, None
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise ValueError(f"{text!r}: missing ']' after the IPv6 address")
        host, rest = text[1:close], text[close + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{text!r}: expected ':PORT' after ']'")
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r}: {host!r} is not an IPv4 or IPv6 address literal") from None
    if port_text is None:
        if default_port is None:
            raise ValueError(f"{text!r}: needs a port, as host:port or [v6]:port")
        return Endpoint(host, default_port)
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"{text!r}: port must be a number from 0 to 65535")
    return Endpoint(host, int(port_text))


def parse_zone(text: str) -> str:
    name = text.strip().lower().rstrip(".")
    if not name:
        raise ValueError("a zone name may not be empty")
    labels = name.split(".")
    if len(name) > 200:
        raise ValueError(f"{text!r}: too long for a zone (keep it under 200 octets)")
    for label in labels:
        if not _LABEL.fullmatch(label):
            raise ValueError(f"{text!r}: {label!r} is not a valid DNS label")
    return name


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
        return True
    if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{value!r} is not a boolean (true or false)")


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v for v in (p.strip() for p in value.split(",")) if v]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise ValueError(f"{value!r} is not a list of strings")


def _number(kind: type[int] | type[float], low: float, high: float) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not a number")
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"{value!r} is not a{'n integer' if kind is int else ' number'}") from None
        if not low <= number <= high:
            raise ValueError(f"{number} is out of range ({low:g} to {high:g})")
        return number

    return parse


def _listen_list(value: Any) -> tuple[Endpoint, ...]:
    items = tuple(parse_endpoint(v) for v in _as_list(value))
    if not items:
        raise ValueError("at least one address:port is needed")
    return items


def _upstreams(value: Any) -> tuple[Endpoint, ...]:
    return tuple(parse_endpoint(v, default_port=53) for v in _as_list(value))


def _names(value: Any) -> tuple[str, ...]:
    return tuple(parse_zone(v) for v in _as_list(value))


def _level(value: Any) -> str:
    text = str(value).lower()
    if text not in ("debug", "info", "warning", "error"):
        raise ValueError(f"{value!r}: use debug, info, warning or error")
    return text


def _url(value: Any) -> str:
    text = str(value).strip()
    if text and "://" not in text:
        raise ValueError(f"{text!r} is not a URL (e.g. sqlite:///var/lib/s25rbl/s25rbl.db)")
    return text


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
        "max_concurrent": _number(int, 1, 256),
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
        "reports_per_minute": _number(float, 1, 1e7),
        "address_reports_per_minute": _number(float, 1, 1e7),
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
    database: DatabaseSettings = sections["database"]
    if not database.url:
        sections["database"] = DatabaseSettings(url=f"sqlite:///{default_state_dir(env) / 's25rbl.db'}")
    return Settings(source=source, **sections)


def _replace(obj: Any, **changes: Any) -> Any:
    from dataclasses import replace

    return replace(obj, **changes)
