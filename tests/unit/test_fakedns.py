"""The fake upstream DNS server behaves like the real thing a stub resolver talks to."""

from __future__ import annotations

import socket
import struct

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from tests.support.fakedns import FakeAuthority

TIMEOUT = 2.0


def ask(
    server: FakeAuthority, name: str, rdtype: str, *, tcp: bool = False, timeout: float = TIMEOUT
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    if tcp:
        return dns.query.tcp(query, server.host, port=server.port, timeout=timeout)
    return dns.query.udp(query, server.host, port=server.port, timeout=timeout)


def answer_values(response: dns.message.Message, rdtype: str) -> list[str]:
    wanted = dns.rdatatype.from_text(rdtype)
    return sorted(rd.to_text() for rrset in response.answer if rrset.rdtype == wanted for rd in rrset)


def soa_in_authority(response: dns.message.Message) -> dns.rrset.RRset:
    soas = [rrset for rrset in response.authority if rrset.rdtype == dns.rdatatype.SOA]
    assert len(soas) == 1
    return soas[0]


def test_start_binds_udp_and_tcp_on_one_port() -> None:
    with FakeAuthority() as server:
        host, port = server.host, server.port
        assert host == "127.0.0.1"
        assert port > 0
        # Both transports answer on the port start() reported.
        assert ask(server, "x.example", "A").rcode() == dns.rcode.NXDOMAIN
        assert ask(server, "x.example", "A", tcp=True).rcode() == dns.rcode.NXDOMAIN
    # After stop() the TCP port no longer accepts connections.
    with pytest.raises(OSError), socket.create_connection((host, port), timeout=1):
        pass


def test_ptr_ipv4_and_ipv6(fake_dns: FakeAuthority) -> None:
    fake_dns.add_ptr("192.0.2.7", "Mail.Example.ORG.", "alias.example.org")
    fake_dns.add_ptr("2001:db8::25", "mx.example.net")

    v4 = ask(fake_dns, "7.2.0.192.in-addr.arpa", "PTR")
    assert v4.rcode() == dns.rcode.NOERROR
    assert v4.flags & dns.flags.AA
    assert v4.flags & dns.flags.RA
    assert answer_values(v4, "PTR") == ["alias.example.org.", "mail.example.org."]

    name6 = "5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
    v6 = ask(fake_dns, name6, "PTR")
    assert answer_values(v6, "PTR") == ["mx.example.net."]


def test_a_and_aaaa(fake_dns: FakeAuthority) -> None:
    fake_dns.add_host("mail.example.org", "192.0.2.7", "192.0.2.8", "2001:db8::25", ttl=120)

    a = ask(fake_dns, "MAIL.example.org.", "A")
    assert answer_values(a, "A") == ["192.0.2.7", "192.0.2.8"]
    assert a.answer[0].ttl == 120
    assert answer_values(ask(fake_dns, "mail.example.org", "AAAA"), "AAAA") == ["2001:db8::25"]


def test_question_echoed_and_id_copied(fake_dns: FakeAuthority) -> None:
    fake_dns.add_host("mail.example.org", "192.0.2.7")
    query = dns.message.make_query("MaIl.ExAmPlE.oRg", "A")
    raw = dns.query.udp(query, fake_dns.host, port=fake_dns.port, timeout=TIMEOUT, raise_on_truncation=True)
    assert raw.id == query.id
    assert raw.question[0].name.to_text() == "MaIl.ExAmPlE.oRg."


def test_unknown_name_is_nxdomain_with_soa(fake_dns: FakeAuthority) -> None:
    response = ask(fake_dns, "nothing.example", "A")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.flags & dns.flags.AA
    assert not response.answer
    soa = soa_in_authority(response)
    assert soa.ttl == 60
    assert soa[0].minimum == 60


def test_existing_name_other_type_is_nodata_with_soa(fake_dns: FakeAuthority) -> None:
    fake_dns.add_host("v4only.example.org", "192.0.2.9")
    response = ask(fake_dns, "v4only.example.org", "AAAA")
    assert response.rcode() == dns.rcode.NOERROR
    assert not response.answer
    assert soa_in_authority(response).ttl == 60


def test_empty_non_terminal_is_nodata(fake_dns: FakeAuthority) -> None:
    fake_dns.add_host("a.b.example.org", "192.0.2.9")
    response = ask(fake_dns, "b.example.org", "A")
    assert response.rcode() == dns.rcode.NOERROR
    assert not response.answer


def test_cname_chain_followed(fake_dns: FakeAuthority) -> None:
    fake_dns.add_cname("www.example.org", "edge.cdn.example")
    fake_dns.add_cname("edge.cdn.example.", "node7.cdn.example")
    fake_dns.add_host("node7.cdn.example", "198.51.100.7")

    response = ask(fake_dns, "www.example.org", "A")
    assert response.rcode() == dns.rcode.NOERROR
    assert answer_values(response, "CNAME") == ["edge.cdn.example.", "node7.cdn.example."]
    assert answer_values(response, "A") == ["198.51.100.7"]
    # The chain is in order: www -> edge -> node7 -> address.
    owners = [rrset.name.to_text() for rrset in response.answer]
    assert owners == ["www.example.org.", "edge.cdn.example.", "node7.cdn.example."]


def test_cname_to_missing_target_is_nxdomain_with_chain(fake_dns: FakeAuthority) -> None:
    fake_dns.add_cname("dangling.example.org", "gone.example.org")
    response = ask(fake_dns, "dangling.example.org", "A")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert answer_values(response, "CNAME") == ["gone.example.org."]
    soa_in_authority(response)


def test_cname_query_returns_only_the_alias(fake_dns: FakeAuthority) -> None:
    fake_dns.add_cname("www.example.org", "host.example.org")
    fake_dns.add_host("host.example.org", "192.0.2.1")
    response = ask(fake_dns, "www.example.org", "CNAME")
    assert answer_values(response, "CNAME") == ["host.example.org."]
    assert answer_values(response, "A") == []


def test_timeout_mode_never_answers(fake_dns: FakeAuthority) -> None:
    fake_dns.behave("192.0.2.66", "timeout")
    with pytest.raises(dns.exception.Timeout):
        ask(fake_dns, "66.2.0.192.in-addr.arpa", "PTR", timeout=0.5)
    with pytest.raises(dns.exception.Timeout):
        ask(fake_dns, "66.2.0.192.in-addr.arpa", "PTR", tcp=True, timeout=0.5)
    assert fake_dns.queries == [
        ("66.2.0.192.in-addr.arpa", "PTR", "udp"),
        ("66.2.0.192.in-addr.arpa", "PTR", "tcp"),
    ]


@pytest.mark.parametrize(
    ("mode", "rcode"),
    [
        ("servfail", dns.rcode.SERVFAIL),
        ("refused", dns.rcode.REFUSED),
        ("nxdomain", dns.rcode.NXDOMAIN),
    ],
    ids=["servfail", "refused", "nxdomain"],
)
def test_failure_modes(fake_dns: FakeAuthority, mode: str, rcode: dns.rcode.Rcode) -> None:
    # Data exists, but the behaviour wins.
    fake_dns.add_host("broken.example.org", "192.0.2.3")
    fake_dns.behave("Broken.Example.Org.", mode)  # type: ignore[arg-type]
    for tcp in (False, True):
        response = ask(fake_dns, "broken.example.org", "A", tcp=tcp)
        assert response.rcode() == rcode
        assert not response.answer
    # Other names are unaffected.
    fake_dns.add_host("fine.example.org", "192.0.2.4")
    assert answer_values(ask(fake_dns, "fine.example.org", "A"), "A") == ["192.0.2.4"]


def test_behave_rejects_unknown_mode(fake_dns: FakeAuthority) -> None:
    with pytest.raises(ValueError, match="unknown mode"):
        fake_dns.behave("x.example", "explode")  # type: ignore[arg-type]


def test_truncate_over_udp_full_over_tcp(fake_dns: FakeAuthority) -> None:
    fake_dns.add_ptr("203.0.113.5", "big.example.net")
    fake_dns.behave("203.0.113.5", "truncate")
    name = "5.113.0.203.in-addr.arpa"

    query = dns.message.make_query(name, "PTR")
    udp = dns.query.udp(query, fake_dns.host, port=fake_dns.port, timeout=TIMEOUT)
    assert udp.flags & dns.flags.TC
    assert not udp.answer

    tcp = ask(fake_dns, name, "PTR", tcp=True)
    assert not tcp.flags & dns.flags.TC
    assert answer_values(tcp, "PTR") == ["big.example.net."]


def test_oversized_udp_answer_is_truncated(fake_dns: FakeAuthority) -> None:
    # 60 addresses do not fit 512 octets without EDNS0: TC=1, then TCP carries them all.
    addresses = [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(60)]
    fake_dns.add_host("pool.example.org", *addresses)
    query = dns.message.make_query("pool.example.org", "A", use_edns=False)
    udp = dns.query.udp(query, fake_dns.host, port=fake_dns.port, timeout=TIMEOUT)
    assert udp.flags & dns.flags.TC
    assert len(answer_values(ask(fake_dns, "pool.example.org", "A", tcp=True), "A")) == 60


def test_two_queries_on_one_tcp_connection(fake_dns: FakeAuthority) -> None:
    fake_dns.add_host("one.example.org", "192.0.2.1")
    fake_dns.add_host("two.example.org", "192.0.2.2")
    with socket.create_connection((fake_dns.host, fake_dns.port), timeout=TIMEOUT) as sock:
        # Both queries go out before either answer is read (pipelining, RFC 7766 6.2.1.1).
        queries = [dns.message.make_query(n, "A") for n in ("one.example.org", "two.example.org")]
        for query in queries:
            wire = query.to_wire()
            sock.sendall(struct.pack("!H", len(wire)) + wire)
        for query, expected in zip(queries, ("192.0.2.1", "192.0.2.2"), strict=True):
            (length,) = struct.unpack("!H", _recv_exactly(sock, 2))
            response = dns.message.from_wire(_recv_exactly(sock, length))
            assert response.id == query.id
            assert answer_values(response, "A") == [expected]
    assert [q[2] for q in fake_dns.queries] == ["tcp", "tcp"]


def test_query_log_and_reset(fake_dns: FakeAuthority) -> None:
    ask(fake_dns, "Mixed.Case.Example.", "AAAA")
    ask(fake_dns, "7.2.0.192.in-addr.arpa", "PTR", tcp=True)
    assert fake_dns.queries == [
        ("mixed.case.example", "AAAA", "udp"),
        ("7.2.0.192.in-addr.arpa", "PTR", "tcp"),
    ]
    fake_dns.reset_log()
    assert fake_dns.queries == []


def test_clear_forgets_everything(fake_dns: FakeAuthority) -> None:
    fake_dns.add_host("mail.example.org", "192.0.2.7")
    fake_dns.behave("other.example.org", "servfail")
    fake_dns.clear()
    assert ask(fake_dns, "mail.example.org", "A").rcode() == dns.rcode.NXDOMAIN
    assert ask(fake_dns, "other.example.org", "A").rcode() == dns.rcode.NXDOMAIN
    assert fake_dns.queries == [
        ("mail.example.org", "A", "udp"),
        ("other.example.org", "A", "udp"),
    ]


async def test_usable_from_async_tests(fake_dns: FakeAuthority) -> None:
    # The server runs on its own loop, so an async test's loop can query it freely.
    fake_dns.add_host("async.example.org", "192.0.2.77")
    query = dns.message.make_query("async.example.org", "A")
    response = await dns.asyncquery.udp(query, fake_dns.host, port=fake_dns.port, timeout=TIMEOUT)
    assert answer_values(response, "A") == ["192.0.2.77"]
    response = await dns.asyncquery.tcp(query, fake_dns.host, port=fake_dns.port, timeout=TIMEOUT)
    assert answer_values(response, "A") == ["192.0.2.77"]


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("server closed the connection")
        data += chunk
    return data


@pytest.mark.parametrize(
    ("network", "inside", "outside"),
    [
        ("198.51.100.0/24", "198.51.100.77", "198.51.101.77"),
        ("2001:db8:bad:1::/64", "2001:db8:bad:1:dead:beef:0:1", "2001:db8:bad:2::1"),
    ],
    ids=["v4-24", "v6-64"],
)
def test_a_whole_network_can_misbehave(
    fake_dns: FakeAuthority, network: str, inside: str, outside: str
) -> None:
    import ipaddress

    fake_dns.behave_network(network, "servfail")
    response = ask(fake_dns, ipaddress.ip_address(inside).reverse_pointer, "PTR")
    assert response.rcode() == dns.rcode.SERVFAIL
    response = ask(fake_dns, ipaddress.ip_address(outside).reverse_pointer, "PTR")
    assert response.rcode() == dns.rcode.NXDOMAIN
    with pytest.raises(ValueError, match="boundary"):
        fake_dns.behave_network("198.51.100.0/23", "timeout")
