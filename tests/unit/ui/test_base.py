"""Who the client is behind a proxy, and where the page may send a browser back to."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from s25rbl.ui.base import client_of, safe_return

PROXY = ("127.0.0.1", "10.0.0.0/8")


# (id, peer, X-Forwarded-For, X-Forwarded-Proto, trusted, expected (client, secure))
CASES = [
    ("direct", "192.0.2.1", "", "", PROXY, ("192.0.2.1", False)),
    ("untrusted-peer-headers-ignored", "192.0.2.1", "198.51.100.9", "https", PROXY, ("192.0.2.1", False)),
    ("trusted-proxy", "127.0.0.1", "198.51.100.9", "https", PROXY, ("198.51.100.9", True)),
    (
        "proxy-chain-rightmost-untrusted",
        "127.0.0.1",
        "6.6.6.6, 198.51.100.9, 10.1.2.3",
        "https",
        PROXY,
        ("198.51.100.9", True),
    ),
    ("plain-http-via-proxy", "127.0.0.1", "198.51.100.9", "http", PROXY, ("198.51.100.9", False)),
    ("no-proxies-configured", "127.0.0.1", "198.51.100.9", "https", (), ("127.0.0.1", False)),
    ("proxy-without-header", "127.0.0.1", "", "", PROXY, ("127.0.0.1", False)),
]


@pytest.mark.parametrize(
    ("peer", "xff", "proto", "trusted", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_client_address_and_tls_are_believed_only_from_trusted_proxies(
    peer: str, xff: str, proto: str, trusted: tuple[str, ...], expected: tuple[str, bool]
) -> None:
    headers = {k: v for k, v in (("X-Forwarded-For", xff), ("X-Forwarded-Proto", proto)) if v}
    request = make_mocked_request("GET", "/ui/", headers=headers)
    assert client_of(request.clone(remote=peer), trusted) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("/ui/lists?q=a", "/ui/lists?q=a"),
        ("/ui/explain?q=http://x//y", "/ui/explain?q=http://x//y"),  # slashes in the query are harmless
        ("//evil.example/ui/", "/ui/"),
        ("/ui//evil.example", "/ui/"),
        ("https://evil.example/ui/", "/ui/"),
        ("/ui/../v1/entries", "/ui/"),
        ("/ui/./x", "/ui/"),
        ("/ui/\\evil.example", "/ui/"),
        ("/ui/x\r\nSet-Cookie: a=b", "/ui/"),
        ("/v1/entries", "/ui/"),
        (None, "/ui/"),
        ("/ui/" + "x" * 3000, "/ui/"),
    ],
    ids=[
        "page",
        "query",
        "scheme-relative",
        "double-slash",
        "absolute",
        "dot-dot",
        "dot",
        "backslash",
        "crlf",
        "api",
        "none",
        "long",
    ],
)
def test_a_return_path_stays_on_the_page(value: object, expected: str) -> None:
    assert safe_return(value) == expected
