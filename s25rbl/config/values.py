"""The configuration's values: the ``Endpoint`` type and one parser per kind of setting, each
turning a raw value (from TOML or the environment) into its typed form, or raising ValueError
with a message for the user (``config.load_settings`` adds the key's name); and the system's
nameservers from resolv.conf, the upstreams when none are configured."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """An address and port to listen on or send to."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


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


def parse_bool(value: Any) -> bool:
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


def parse_number(kind: type[int] | type[float], low: float, high: float) -> Callable[[Any], Any]:
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


def parse_listen(value: Any) -> tuple[Endpoint, ...]:
    items = tuple(parse_endpoint(v) for v in _as_list(value))
    if not items:
        raise ValueError("at least one address:port is needed")
    return items


def parse_upstreams(value: Any) -> tuple[Endpoint, ...]:
    return tuple(parse_endpoint(v, default_port=53) for v in _as_list(value))


def parse_names(value: Any) -> tuple[str, ...]:
    return tuple(parse_zone(v) for v in _as_list(value))


def parse_level(value: Any) -> str:
    text = str(value).lower()
    if text not in ("debug", "info", "warning", "error"):
        raise ValueError(f"{value!r}: use debug, info, warning or error")
    return text


def parse_secure_cookie(value: Any) -> str:
    text = str(value).lower()
    if isinstance(value, bool) or text in ("true", "false"):
        return "true" if value is True or text == "true" else "false"
    if text != "auto":
        raise ValueError(f"{value!r}: use auto, true or false")
    return text


def parse_networks(value: Any) -> tuple[str, ...]:
    out = []
    for item in _as_list(value):
        try:
            out.append(str(ipaddress.ip_network(item.strip(), strict=False)))
        except ValueError:
            raise ValueError(
                f"{item!r} is not an address or a network (e.g. 127.0.0.1, 10.0.0.0/8)"
            ) from None
    return tuple(out)


def parse_url(value: Any) -> str:
    text = str(value).strip()
    if text and "://" not in text:
        raise ValueError(f"{text!r} is not a URL (e.g. sqlite:///var/lib/s25rbl/s25rbl.db)")
    return text


def parse_optional_endpoint(value: Any) -> Endpoint | None:
    """An address:port, or None for an empty value (a listener turned off)."""
    text = str(value).strip()
    return parse_endpoint(text) if text else None


def parse_choice(*allowed: str) -> Callable[[Any], str]:
    """One of ``allowed``, compared in lower case."""

    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in allowed:
            raise ValueError(f"{value!r}: use {', '.join(allowed[:-1])} or {allowed[-1]}")
        return text

    return parse


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
