"""The policy service in the real ``s25rbl serve`` over real sockets: the wire protocol and its
bounds under hostile input, and what an operator sees of it (REST, ``/metrics``, ``check``)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.api_client import Api, make_token
from tests.integration.conftest import CLEAN, DYNAMIC
from tests.integration.server import RunningServer, start_server, write_config
from tests.support.fakedns import FakeAuthority

TARPIT = 2
# Clients with S25R-dynamic names (rule 1), forward-confirmed: one or more per test, so that the
# tests sharing the module's server do not meet each other's state.
CLIENTS = [(f"203.0.113.{n}", f"p{n}-ipad{n}.tokyo.ocn.ne.jp") for n in range(30, 40)]
POLICY = f"""tarpit = {TARPIT}
delay = 600
idle_timeout = 1.5
max_connections = 4
"""


def request(ip: str, instance: str = "s1", stage: str = "RCPT", **more: str) -> bytes:
    attributes = {
        "request": "smtpd_access_policy",
        "protocol_state": stage,
        "protocol_name": "ESMTP",
        "client_address": ip,
        "client_name": "unknown",
        "helo_name": "helo.example.org",
        "sender": "alice@example.com",
        "recipient": "bob@example.org",
        "instance": instance,
        **more,
    }
    return "".join(f"{k}={v}\n" for k, v in attributes.items()).encode() + b"\n"


class Client:
    """A policy client on one connection."""

    def __init__(self, server: RunningServer) -> None:
        assert server.policy is not None
        self.sock = socket.create_connection(server.policy, timeout=10)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def answer(self) -> str | None:
        """The next action, or None if the service closed the connection first."""
        while b"\n\n" not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n\n", 1)
        assert line.startswith(b"action="), line
        return line.decode()[len("action=") :]

    def ask(self, data: bytes) -> str | None:
        self.send(data)
        return self.answer()

    def closed(self, timeout: float = 10) -> bool:
        """True once the service closes the connection (within ``timeout``)."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(65536) == b""
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def policy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("policy")
    fake = FakeAuthority()
    fake.start()
    for ip, name in (DYNAMIC, CLEAN, *CLIENTS):
        fake.add_ptr(ip, name)
        fake.add_host(name, ip)
    config = write_config(tmp / "s25rbl.toml", (fake.host, fake.port), tmp / "s25rbl.db", policy=POLICY)
    server = start_server(config)
    try:
        yield server
    finally:
        server.stop()
        fake.stop()


@pytest.fixture
def client(policy_server: RunningServer) -> Iterator[Client]:
    c = Client(policy_server)
    try:
        yield c
    finally:
        c.close()


def works(server: RunningServer) -> None:
    """A fresh connection is answered: the service survived whatever came before."""
    fresh = Client(server)
    try:
        assert fresh.ask(request(CLEAN[0])) == "DUNNO"
    finally:
        fresh.close()


# --- the protocol ------------------------------------------------------------------------


def test_requests_are_answered_in_order_pipelined_or_not(client: Client) -> None:
    client.send(
        request(CLEAN[0]) + request(DYNAMIC[0], "p1") + request(DYNAMIC[0], "p1", recipient="c@example.org")
    )
    assert [client.answer() for _ in range(3)] == ["DUNNO", f"SLEEP {TARPIT}", "DUNNO"]
    assert client.ask(request(DYNAMIC[0], "p1", "DATA", recipient="")) == "DUNNO"


MALFORMED = [
    # id, bytes sent, the answer, whether the connection stays usable
    ("garbage", b"hello there\r\n\r\n", "DUNNO", True),
    ("missing-client-address", b"request=smtpd_access_policy\nprotocol_state=RCPT\n\n", "DUNNO", True),
    ("unknown-client-address", request("unknown"), "DUNNO", True),
    ("101-attributes", b"".join(b"a%d=1\n" % i for i in range(101)) + b"\n", "DUNNO", True),
    ("binary", bytes(range(256)) + b"\n\n", "DUNNO", True),
    ("one-mib-of-attributes", b"x=" + b"a" * (1 << 20) + b"\n\n", "DUNNO", False),
    ("one-mib-without-newlines", b"\xff" * (1 << 20), "DUNNO", False),
]


@pytest.mark.parametrize(
    ("sent", "expected", "usable"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_requests_are_answered_dunno_and_the_service_goes_on(
    policy_server: RunningServer, client: Client, sent: bytes, expected: str, usable: bool
) -> None:
    try:
        client.send(sent)
    except (ConnectionResetError, BrokenPipeError):
        assert not usable  # the service hung up before reading it all
    else:
        assert client.answer() == expected
    if usable:
        assert client.ask(request(CLEAN[0])) == "DUNNO"
    else:
        assert client.closed()
    works(policy_server)


def test_a_request_without_its_empty_line_then_eof_gets_no_answer(
    policy_server: RunningServer, client: Client
) -> None:
    client.send(request(DYNAMIC[0])[:-1])
    client.sock.shutdown(socket.SHUT_WR)
    assert client.closed() and client.buffer == b""
    works(policy_server)


def test_a_request_then_eof_is_answered_before_the_close_as_exim_needs(client: Client) -> None:
    client.send(request(CLEAN[0]))
    client.sock.shutdown(socket.SHUT_WR)  # what ${readsocket} does after its request
    assert client.answer() == "DUNNO"
    assert client.closed()


def test_an_idle_connection_and_a_stalled_request_are_closed(policy_server: RunningServer) -> None:
    idle, stalled = Client(policy_server), Client(policy_server)
    try:
        assert idle.ask(request(CLEAN[0])) == "DUNNO"
        stalled.send(request(CLEAN[0])[:20])  # and nothing more
        assert idle.closed() and stalled.closed()
    finally:
        idle.close()
        stalled.close()
    works(policy_server)


def test_connections_beyond_max_connections_are_closed_at_once(policy_server: RunningServer) -> None:
    opened = [Client(policy_server) for _ in range(4)]
    try:
        for c in opened:
            assert c.ask(request(CLEAN[0])) == "DUNNO"
        extra = Client(policy_server)
        try:
            assert extra.closed()
        finally:
            extra.close()
    finally:
        for c in opened:
            c.close()
    time.sleep(0.2)  # the service sees the closes
    works(policy_server)


def test_a_client_outside_allow_is_refused(tmp_path: Path, upstream: FakeAuthority) -> None:
    config = write_config(
        tmp_path / "s25rbl.toml",
        (upstream.host, upstream.port),
        tmp_path / "s.db",
        policy='allow = "192.0.2.0/24"\n',
    )
    server = start_server(config)
    try:
        refused = Client(server)
        try:
            assert refused.closed()
        finally:
            refused.close()
        # The client sees the close before the server's log line has reached the pipe.
        line = "connection from 127.0.0.1 closed: not in policy.allow"
        deadline = time.monotonic() + 10
        while line not in "".join(server.output) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert line in "".join(server.output)
    finally:
        server.stop()


# --- what an operator sees ----------------------------------------------------------------


@pytest.fixture
def api(policy_server: RunningServer) -> Api:
    assert policy_server.api is not None
    return Api(*policy_server.api, token=make_token(policy_server, f"ops{time.monotonic_ns()}", "admin"))


def test_greylist_and_tarpits_are_listed_searched_and_deleted(policy_server: RunningServer, api: Api) -> None:
    ip = CLIENTS[0][0]
    # A session hangs up in its tarpit; the next one is greylisted (a triplet).
    first, second = Client(policy_server), None
    try:
        assert first.ask(request(ip, "api1", sender="dave@shop.example")) == f"SLEEP {TARPIT}"
        time.sleep(TARPIT * 2 + 0.5)
        second = Client(policy_server)
        deferred = second.ask(request(ip, "api2", sender="dave@shop.example", recipient="erin@example.org"))
        assert deferred == "DEFER_IF_PERMIT 4.7.1 S25R check, be patient [r1]"
    finally:
        first.close()
        if second is not None:
            second.close()
    time.sleep(0.3)  # written a moment after the answer

    tarpits = api.get(f"/v1/tarpits?client={ip}")
    assert tarpits.status == 200, tarpits.body
    record = next(r for r in tarpits.json["items"] if r["instance"] == "api1")
    assert record["survived_at"] is None and record["sender"] == "dave@shop.example"
    assert api.get(f"/v1/tarpits?client={ip}&survived=true").json["items"] == []

    page = api.get("/v1/greylist?client=203.0.113.250&q=erin").json  # any address of the /24
    (triplet,) = page["items"]
    assert triplet["network"] == "203.0.113.0/24" and triplet["status"] == "waiting"
    assert triplet["sender"] == "dave@shop.example" and triplet["recipient"] == "erin@example.org"
    assert api.get("/v1/greylist?passed=true&q=erin").json["items"] == []

    assert api.delete(f"/v1/greylist/{triplet['id']}").status == 204
    assert api.delete(f"/v1/greylist/{triplet['id']}").status == 404
    assert api.delete(f"/v1/tarpits/{record['id']}").status == 204
    audit = [(e["action"], e["target"]) for e in api.get("/v1/audit?limit=1000").json["items"]]
    assert ("greylist.delete", f"#{triplet['id']}") in audit and (
        "tarpit.delete",
        f"#{record['id']}",
    ) in audit


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/v1/greylist?client=not-an-address", "client"),
        ("/v1/tarpits?client=203.0.113.0/24", "client"),
        ("/v1/greylist?passed=maybe", "passed"),
        ("/v1/greylist?bogus=1", "bogus"),
        ("/v1/check/203.0.113.7?helo=x", "helo"),
    ],
    ids=["bad-client", "tarpits-need-an-address", "bad-bool", "unknown-param", "check-unknown-param"],
)
def test_bad_queries_are_problems_naming_the_field(api: Api, path: str, field: str) -> None:
    reply = api.get(path)
    assert (reply.status, reply.content_type) == (422, "application/problem+json")
    assert reply.json["errors"][0]["field"] == field


def test_scopes_apply_to_the_policy_routes(policy_server: RunningServer) -> None:
    assert policy_server.api is not None
    reader = Api(*policy_server.api, token=make_token(policy_server, f"r{time.monotonic_ns()}", "read"))
    assert reader.get("/v1/greylist").status == 200
    assert reader.delete("/v1/greylist/1").status == 403
    assert reader.delete("/v1/tarpits/1").status == 403


def test_stats_metrics_and_check_show_the_policy(policy_server: RunningServer, api: Api) -> None:
    c = Client(policy_server)
    try:
        assert c.ask(request(CLIENTS[1][0], "m1")) == f"SLEEP {TARPIT}"
        assert c.ask(b"nonsense\n\n") == "DUNNO"
    finally:
        c.close()
    figures = api.get("/v1/stats").json["policy"]
    assert figures["mode"] == "targrey" and figures["tarpits"]["started"] >= 1
    assert figures["bad_requests"]["malformed"] >= 1
    metrics = api.get("/metrics", token=None).body.decode()
    for name in (
        's25rbl_policy_requests_total{outcome="tarpit",stage="RCPT"}',
        's25rbl_policy_tarpits_total{outcome="started"}',
        's25rbl_policy_tarpits_total{outcome="abandoned"}',
        's25rbl_policy_greylist_total{outcome="deferred"}',
        's25rbl_policy_bad_requests_total{problem="malformed"}',
        "s25rbl_policy_learned_total",
        "s25rbl_policy_connections ",
    ):
        assert name in metrics, name
    explained = api.get(f"/v1/check/{DYNAMIC[0]}?sender=alice@example.com&recipient=bob@example.org").json
    assert explained["policy"]["mode"] == "targrey"
    assert explained["policy"]["action"] in (
        f"SLEEP {TARPIT}",
        "DEFER_IF_PERMIT 4.7.1 S25R check, be patient [r1]",
    )
    assert api.get(f"/v1/check/{CLEAN[0]}").json["policy"]["action"] == "DUNNO"


def test_check_on_the_command_line_says_what_the_policy_would_do(policy_server: RunningServer) -> None:
    ip = CLIENTS[3][0]
    c = Client(policy_server)
    try:
        assert (
            c.ask(request(ip, "c1", sender="zed@example.com", recipient="yan@example.org"))
            == f"SLEEP {TARPIT}"
        )
    finally:
        c.close()
    time.sleep(TARPIT * 2 + 0.5)  # it hung up
    done = policy_server.cli(
        "check", ip, "--sender", "zed@example.com", "--recipient", "yan@example.org", "--json"
    )
    assert done.returncode == 0, done.stderr
    policy = json.loads(done.stdout)["policy"]
    # Greylisted now, its triplet's first attempt the tarpitted one (delay 600 s: not yet).
    assert policy["action"] == "DEFER_IF_PERMIT 4.7.1 S25R check, be patient [r1]", policy
    assert policy["tarpit"]["hung_up"] is True and policy["triplet"]["passed_at"] is None
    assert policy["triplet"]["network"] == "203.0.113.0/24"
    text = policy_server.cli("check", ip)
    assert "policy (targrey): DEFER_IF_PERMIT" in text.stdout and "hung up" in text.stdout, text.stdout
    text = policy_server.cli("check", CLEAN[0])
    assert text.returncode == 0 and "policy (targrey): DUNNO" in text.stdout, text.stdout
    mixed = policy_server.cli("check", "--name", "x.example.org", "--sender", "a@b.c")
    assert mixed.returncode == 2 and "--sender and --recipient go with an IP address" in mixed.stderr
