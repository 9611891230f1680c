"""The policy-delegation wire format: framing, attributes, the request's parts, the answer."""

from __future__ import annotations

import ipaddress
import random

import pytest

from s25rbl.errors import PolicyRequestError
from s25rbl.policy import protocol
from s25rbl.policy.protocol import (
    MAX_ATTRIBUTES,
    MAX_REQUEST,
    Framer,
    answer,
    one_request,
    parse_attributes,
    read_request,
)

REQUEST = b"request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.7\n\n"

FRAMES = [
    ("whole", [REQUEST], 1),
    ("two-in-one-read", [REQUEST + REQUEST], 2),
    ("byte-by-byte", [bytes([b]) for b in REQUEST], 1),
    ("split-in-the-empty-line", [REQUEST[:-1], REQUEST[-1:]], 1),
    ("crlf", [REQUEST.replace(b"\n", b"\r\n")], 1),
    ("crlf-split-in-the-empty-line", [REQUEST.replace(b"\n", b"\r\n")[:-2], b"\r\n"], 1),
    ("incomplete", [REQUEST[:-1]], 0),
    ("an-empty-request", [b"\n"], 1),
]


@pytest.mark.parametrize(("chunks", "count"), [c[1:] for c in FRAMES], ids=[c[0] for c in FRAMES])
def test_requests_are_cut_at_their_empty_line_however_the_bytes_arrive(
    chunks: list[bytes], count: int
) -> None:
    framer = Framer()
    blocks = [block for chunk in chunks for block in framer.feed(chunk)]
    assert len(blocks) == count
    for block in blocks:
        if block:
            assert parse_attributes(block)["client_address"] == "192.0.2.7"
    assert framer.pending == (len(b"".join(chunks)) if count == 0 else 0)


def test_a_stream_is_cut_the_same_in_one_read_in_pieces_and_byte_by_byte() -> None:
    """A whole request in one read takes a shortcut; every stream must be cut as the general
    path cuts it (empty requests, CR LF, a request after an empty line, incomplete tails)."""
    pieces = [b"a=b", b"\n", b"\r\n", b"\n\n", b"x=", b"=", b"\r"]
    rng = random.Random(25)
    shortcut_taken = 0
    for _ in range(5000):
        stream = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 12)))
        by_byte = Framer()
        expected = [block for i in range(len(stream)) for block in by_byte.feed(stream[i : i + 1])]
        whole = Framer()
        assert whole.feed(stream) == expected, stream
        assert whole.pending == by_byte.pending
        cut = rng.randint(0, len(stream))
        pieces_framer = Framer()
        in_two = pieces_framer.feed(stream[:cut]) + pieces_framer.feed(stream[cut:])
        assert in_two == expected, (stream, cut)
        shortcut_taken += one_request(stream)
    assert shortcut_taken > 20  # the shortcut was exercised, not only the general path


def test_a_request_over_64_kib_cannot_be_read() -> None:
    framer = Framer()
    framer.feed(b"x=" + b"a" * (MAX_REQUEST - 10) + b"\n")
    with pytest.raises(PolicyRequestError) as err:
        framer.feed(b"y=" + b"b" * 100 + b"\n")
    assert err.value.kind == "oversize"


@pytest.mark.parametrize("before", [b"", b"client_address=192.0.2.7\n\n"])
def test_a_whole_request_over_64_kib_in_one_read_cannot_be_read_either(before: bytes) -> None:
    big = b"client_address=192.0.2.7\nx=" + b"a" * MAX_REQUEST + b"\n\n"
    with pytest.raises(PolicyRequestError) as err:
        Framer().feed(before + big)
    assert err.value.kind == "oversize"


def test_a_request_of_64_kib_is_read() -> None:
    big = b"client_address=192.0.2.7\nx=" + b"a" * (MAX_REQUEST - 40) + b"\n\n"
    assert len(big) <= MAX_REQUEST and Framer().feed(big)


ATTRIBUTES = [
    ("too-many", b"\n".join(b"a%d=1" % i for i in range(MAX_ATTRIBUTES + 1)), "too-many-attributes"),
    ("garbage", b"garbage", "malformed"),
    ("no-name", b"=value", "malformed"),
    ("binary", b"\x00\xff\xfe", "malformed"),
]


@pytest.mark.parametrize(("block", "kind"), [c[1:] for c in ATTRIBUTES], ids=[c[0] for c in ATTRIBUTES])
def test_attributes_that_cannot_be_read_are_refused_with_their_kind(block: bytes, kind: str) -> None:
    with pytest.raises(PolicyRequestError) as err:
        parse_attributes(block)
    assert err.value.kind == kind


def test_attributes_keep_equals_signs_in_values_and_decode_utf8() -> None:
    attributes = parse_attributes("sender=prvs=1234=a@exämple.org\nrecipient=\nx=1\nx=2".encode())
    assert attributes == {"sender": "prvs=1234=a@exämple.org", "recipient": "", "x": "2"}
    assert len(parse_attributes(b"\n".join(b"a%d=1" % i for i in range(MAX_ATTRIBUTES)))) == MAX_ATTRIBUTES


BAD_REQUESTS = [
    ("no-client-address", {"protocol_state": "RCPT"}, "no-client-address"),
    ("unknown-client-address", {"client_address": "unknown"}, "bad-client-address"),
    ("name-as-address", {"client_address": "mail.example.org"}, "bad-client-address"),
    ("another-request-kind", {"request": "junk", "client_address": "192.0.2.1"}, "malformed"),
    ("huge-instance", {"client_address": "192.0.2.1", "instance": "i" * 65}, "malformed"),
]


@pytest.mark.parametrize(
    ("attributes", "kind"), [c[1:] for c in BAD_REQUESTS], ids=[c[0] for c in BAD_REQUESTS]
)
def test_requests_that_cannot_be_judged(attributes: dict[str, str], kind: str) -> None:
    with pytest.raises(PolicyRequestError) as err:
        read_request(attributes)
    assert err.value.kind == kind


def test_a_request_is_read_cleaned_and_bounded() -> None:
    request = read_request(
        {
            "request": "smtpd_access_policy",
            "protocol_state": "rcpt",
            "client_address": "::ffff:192.0.2.7",
            "client_name": "mail.example.org",
            "helo_name": "helo\x07.example.org",
            "sender": "a@example.org" + "x" * 1000,
            "recipient": "b@example.net",
            "instance": "1a2b.5f3c2d1e.12345.0",
            "sasl_username": "",
            "stress": "yes",
        }
    )
    assert request.stage == "RCPT"
    assert request.client == ipaddress.ip_address("192.0.2.7")  # IPv4-mapped: the IPv4 address
    assert request.helo == "helo.example.org"
    assert len(request.sender) == 512
    assert (request.instance, request.authenticated, request.stress) == ("1a2b.5f3c2d1e.12345.0", False, True)
    assert read_request({"client_address": "2001:db8::7", "sasl_username": "alice"}).authenticated


def test_the_answer_is_one_action_line_and_an_empty_line() -> None:
    assert answer("SLEEP 65") == b"action=SLEEP 65\n\n"


def test_crlf_line_ends_are_dropped_and_a_bad_line_is_named() -> None:
    assert parse_attributes(b"a=1\r\nb=x\ry\r\nc=3\r") == {"a": "1", "b": "x\ry", "c": "3"}
    with pytest.raises(PolicyRequestError, match=r"line 2 is not name=value: b'junk'"):
        parse_attributes(b"a=1\r\njunk\r\nc=3")


def test_client_addresses_are_remembered_within_a_bound() -> None:
    for i in range(protocol.MAX_ADDRESSES + 10):
        assert read_request({"client_address": f"::ffff:10.0.{i >> 8}.{i & 255}"}).client == (
            ipaddress.ip_address(f"10.0.{i >> 8}.{i & 255}")
        )
    assert 0 < len(protocol._ADDRESSES) <= protocol.MAX_ADDRESSES
    assert read_request({"client_address": "::ffff:10.0.0.1"}).client == ipaddress.ip_address("10.0.0.1")
