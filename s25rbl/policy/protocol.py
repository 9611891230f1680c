"""The policy-delegation wire format (Postfix SMTPD_POLICY_README): a request is ``name=value``
lines ended by an empty line; the answer is one ``action=...`` line and an empty line.

Bounded: a request longer than ``MAX_REQUEST`` bytes, complete or not, cannot be read (the
connection is closed after a DUNNO), one of more than ``MAX_ATTRIBUTES`` lines or with a line
that is not ``name=value`` is answered DUNNO. ``\\r\\n`` line ends are read as ``\\n``.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from s25rbl.errors import PolicyRequestError
from s25rbl.lists.values import IPAddress

MAX_REQUEST = 64 * 1024
MAX_ATTRIBUTES = 100
MAX_INSTANCE = 64  # Postfix's instance attribute is about 25 characters

MAX_ADDRESSES = 4096  # client addresses kept parsed (each under 400 bytes with its key and text)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ADDRESSES: dict[str, tuple[IPAddress, str]] = {}  # client_address -> (address, its text)


class Framer:
    """Cuts a byte stream into request blocks (the lines before each empty line)."""

    __slots__ = ("_buffer", "_scanned")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._scanned = 0  # bytes searched already without finding an end

    @property
    def pending(self) -> int:
        """Bytes of a request not complete yet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """The requests ``data`` completes, oldest first. PolicyRequestError("oversize") once
        the incomplete request passes MAX_REQUEST bytes: the stream cannot be trusted after it."""
        buffer = self._buffer
        if not buffer and one_request(data):
            # One whole request, as Postfix sends it (the common case): no copy, no search.
            return [data[:-2]]
        buffer += data
        blocks: list[bytes] = []
        while buffer:
            end = _end_of_request(buffer, self._scanned)
            if end is None:
                self._scanned = len(buffer)
                break
            stop, consumed = end
            if consumed > MAX_REQUEST:  # complete, but over the bound all the same
                raise PolicyRequestError("oversize", f"a request longer than {MAX_REQUEST} bytes")
            blocks.append(bytes(buffer[:stop]))
            del buffer[:consumed]
            self._scanned = 0
        if len(buffer) > MAX_REQUEST:
            raise PolicyRequestError("oversize", f"a request longer than {MAX_REQUEST} bytes")
        return blocks


def one_request(data: bytes) -> bool:
    """Whether ``data`` is exactly one whole request within MAX_REQUEST, as Postfix writes one:
    its only empty line at its end, none first, and no CR (CR LF line ends take the general
    path, which reads them as LF)."""
    return (
        len(data) <= MAX_REQUEST
        and data.find(b"\n\n") == len(data) - 2 > 0
        and data[0] != 10
        and b"\r" not in data
    )


def stage_of(protocol_state: str) -> str:
    """The stage a ``protocol_state`` value names: RCPT, DATA, END-OF-MESSAGE, ..."""
    return protocol_state.strip().upper()[:32]


def _end_of_request(buffer: bytearray, scanned: int) -> tuple[int, int] | None:
    """(where the request's lines end, where the next request starts), or None."""
    if buffer[:1] == b"\n":
        return 0, 1
    if buffer[:2] == b"\r\n":
        return 0, 2
    plain = buffer.find(b"\n\n", max(scanned - 1, 0))
    crlf = buffer.find(b"\n\r\n", max(scanned - 2, 0))
    if plain < 0 and crlf < 0:
        return None
    if crlf < 0 or 0 <= plain < crlf:
        return plain, plain + 2
    return crlf, crlf + 3


def parse_attributes(block: bytes) -> dict[str, str]:
    """The ``name=value`` lines of one request block (a later duplicate wins).

    The block is decoded once and cut by C-level calls (the hot path of every request); only a
    block that fails is read again line by line, to say which line is wrong."""
    if not block:
        return {}
    text = block.decode("utf-8", "replace")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        if text.endswith("\r"):  # the last line's CR: the framer cut the block before its LF
            text = text[:-1]
    lines = text.split("\n")
    if len(lines) > MAX_ATTRIBUTES:
        raise PolicyRequestError("too-many-attributes", f"{len(lines)} attributes (at most {MAX_ATTRIBUTES})")
    try:
        attributes = dict(line.split("=", 1) for line in lines)
    except ValueError:  # a line without "="
        attributes = {"": ""}
    if "" in attributes:
        raise _malformed(lines)
    return attributes


def _malformed(lines: list[str]) -> PolicyRequestError:
    """The error for the first line that is not ``name=value``."""
    for number, line in enumerate(lines, 1):
        name, equals, _ = line.partition("=")
        if not equals or not name:
            shown = line[:60].encode("utf-8", "replace")
            return PolicyRequestError("malformed", f"line {number} is not name=value: {shown!r}")
    return PolicyRequestError("malformed", "a line is not name=value")  # not reached


def answer(action: str) -> bytes:
    """The wire form of an answer."""
    return b"action=" + action.encode("utf-8", "replace") + b"\n\n"


@dataclass(frozen=True, slots=True)
class PolicyRequest:
    """What the policy uses of a request, validated and cleaned of control characters."""

    stage: str  # protocol_state, upper-case: RCPT, DATA, END-OF-MESSAGE, ...
    client: IPAddress
    ip: str  # the client's address as text: str(client), made once
    client_name: str  # as the MTA gives it: shown, never trusted (s25rbl looks names up itself)
    helo: str
    sender: str
    recipient: str
    instance: str  # one SMTP transaction; "" when the MTA sends none
    authenticated: bool  # sasl_username given
    stress: bool


def read_request(attributes: dict[str, str]) -> PolicyRequest:
    """The request's parts; PolicyRequestError for one that cannot be judged."""
    kind = attributes.get("request", "smtpd_access_policy")
    if kind != "smtpd_access_policy":
        raise PolicyRequestError("malformed", f"request={_clean(kind, 40)!r} is not smtpd_access_policy")
    raw = attributes.get("client_address")
    if raw is None:
        raise PolicyRequestError("no-client-address", "no client_address")
    address, ip = _ADDRESSES.get(raw) or _address(raw)
    instance = _clean(attributes.get("instance", ""), 1000)
    if len(instance) > MAX_INSTANCE:
        raise PolicyRequestError("malformed", f"an instance of {len(instance)} characters")
    return PolicyRequest(
        stage=stage_of(attributes.get("protocol_state", "")),
        client=address,
        ip=ip,
        client_name=_clean(attributes.get("client_name", ""), 255),
        helo=_clean(attributes.get("helo_name", ""), 255),
        sender=_clean(attributes.get("sender", ""), 512),
        recipient=_clean(attributes.get("recipient", ""), 512),
        instance=instance,
        authenticated=bool(attributes.get("sasl_username", "").strip()),
        stress=attributes.get("stress", "").strip().lower() == "yes",
    )


def _address(raw: str) -> tuple[IPAddress, str]:
    """``client_address`` as an address (IPv4-mapped: the IPv4 address), remembered: the same
    clients ask again and again, and parsing costs more than the rest of the request's reading."""
    try:
        address = ipaddress.ip_address(raw.strip())
    except ValueError:
        raise PolicyRequestError("bad-client-address", f"client_address={_clean(raw, 60)!r}") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if len(_ADDRESSES) >= MAX_ADDRESSES:
        _ADDRESSES.clear()  # bounded: start again rather than keep count of use
    parsed = (address, str(address))
    if len(raw) <= 64:
        _ADDRESSES[raw] = parsed
    return parsed


def _clean(value: str, limit: int) -> str:
    # Nearly every value is printable: one C-level check instead of a regex substitution.
    return value[:limit] if value.isprintable() else _CONTROL.sub("", value)[:limit]
