"""DNS names on the wire: uncompressed encoding, compression pointers, skipping a name."""

from __future__ import annotations

import struct
from collections.abc import Iterable


def encode_name(name: str) -> bytes:
    """A name in uncompressed wire form; the root is ``""`` or ``"."``."""
    stripped = name.strip(".")
    return encode_labels([label.encode("ascii") for label in stripped.split(".")] if stripped else [], name)


def encode_labels(labels: Iterable[bytes], name: str) -> bytes:
    """Labels in uncompressed wire form; ValueError naming ``name`` if one is empty or too
    long, or the whole is over 255 octets."""
    out = bytearray()
    for label in labels:
        if not 0 < len(label) <= 63:
            raise ValueError(f"bad label length in DNS name: {name!r}")
        out.append(len(label))
        out += label
    out.append(0)
    if len(out) > 255:
        raise ValueError(f"DNS name longer than 255 octets: {name!r}")
    return bytes(out)


def skip_name(data: bytes, offset: int) -> int:
    """The offset just past the (possibly compressed) name at ``offset``."""
    while True:
        length = data[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:
            return offset + 2
        if length > 63:
            raise ValueError("invalid label type")
        offset += 1 + length


def pointer(offset: int) -> bytes:
    """A compression pointer to a name at ``offset`` in the message."""
    return struct.pack("!H", 0xC000 | offset)
