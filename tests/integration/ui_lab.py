"""One real node for the operator's page tests: ``s25rbl serve`` on a SQLite file, the tests'
own authoritative DNS with S25R-dynamic hosts (documentation addresses, only ever names in
its data), tokens made with the real CLI, and helpers that report retries over REST and ask
the node's DNS port what it answers now."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dns.rcode

from tests.integration.api_client import Api, make_token
from tests.integration.conftest import populate
from tests.integration.server import RunningServer, start_server, write_config
from tests.integration.test_policy_service import Client, request
from tests.integration.test_responder import answers, name, udp
from tests.support.fakedns import FakeAuthority

BL, WL = "bl.s25rbl.test", "wl.s25rbl.test"
# Each test has hosts of its own, so the tests of one module share a node without meeting.
LEARN = ("198.51.100.11", "p11-dyn4.isp-l.example")
REVOKE = ("198.51.100.12", "p12-dyn4.isp-r.example")
KEYBOARD = ("198.51.100.13", "p13-dyn4.isp-k.example")
POOL = (("198.51.100.21", "p21-dyn5.pool.isp-a.example"), ("198.51.100.22", "p22-dyn5.pool.isp-a.example"))
POOL2 = (("198.51.100.23", "p23-dyn5.pool.isp-b.example"), ("198.51.100.24", "p24-dyn5.pool.isp-b.example"))
EXPLAIN = ("198.51.100.31", "p31-dyn6.isp-e.example")
SPARE = ("198.51.100.41", "p41-dyn6.isp-s.example")
# Clients of the policy service (one /24: each test's triplets have a sender of their own).
GREY = ("198.51.100.51", "p51-dyn7.isp-g.example")
GREY_WL = ("198.51.100.52", "p52-dyn7.isp-w.example")
TARPITTED = ("198.51.100.53", "p53-dyn7.isp-t.example")
SEEDED = ("198.51.100.54", "p54-dyn7.isp-p.example")
HOSTS = (LEARN, REVOKE, KEYBOARD, *POOL, *POOL2, EXPLAIN, SPARE, GREY, GREY_WL, TARPITTED, SEEDED)
TARPIT, DELAY = 1, 2  # seconds: short, so that tests see tarpits end and greylists pass
CONFIG = """
[learning]
min_interval = 0

[ui]
sample_interval = 1
"""


@dataclass
class Lab:
    """The node under test and what the tests do to it besides the page."""

    server: RunningServer
    fake: FakeAuthority
    admin: str  # token names: ops (admin), viewer (read), mx1 (report)
    viewer: str
    reporter: Api

    @property
    def base(self) -> str:
        assert self.server.api is not None
        return f"http://{self.server.api[0]}:{self.server.api[1]}"

    def report(self, ip: str, client_name: str, times: int, *, sender: str, key: str) -> dict[str, Any]:
        """``times`` rejections of (ip, sender, recipient), each in a request of its own: with
        ``min_interval`` 0 here, each request is an attempt (a batch would be one). Returns the
        API's answers added up."""
        total: dict[str, Any] = {
            "accepted": 0,
            "duplicate": 0,
            "refused": 0,
            "errors": [],
            "learned": [],
            "suggested": [],
        }
        for n in range(times):
            one = {
                "client_ip": ip,
                "client_name": client_name,
                "helo": client_name,
                "sender": sender,
                "recipient": "postmaster@example.org",
                "time": datetime.now(UTC).isoformat(),
                "idempotency_key": f"{key}-{n}",
            }
            reply = self.reporter.post("/v1/reports", {"reports": [one]})
            assert reply.status == 202, reply.body
            for field, value in reply.json.items():
                total[field] = total[field] + value
        return total

    def policy(self, ip: str, instance: str, stage: str = "RCPT", **attributes: str) -> str | None:
        """What the node's policy service answers to one request, asked on a connection of its
        own (as an smtpd process would)."""
        client = Client(self.server)
        try:
            return client.ask(request(ip, instance, stage, **attributes))
        finally:
            client.close()

    def deliver(self, ip: str, instance: str, **attributes: str) -> list[str | None]:
        """A patient client's session: RCPT (tarpitted), DATA, the end of its message."""
        stages = [("RCPT", attributes), ("DATA", {**attributes, "recipient": ""})]
        stages.append(("END-OF-MESSAGE", {**attributes, "recipient": ""}))
        return [self.policy(ip, instance, stage, **attrs) for stage, attrs in stages]

    def answer(self, ip: str, zone: str = BL) -> str:
        """The A record the node answers for ``ip`` in ``zone`` now, or NXDOMAIN."""
        reply = udp(self.server, name(ip, zone), "A")
        if reply.rcode() == dns.rcode.NXDOMAIN:
            return "NXDOMAIN"
        return ",".join(answers(reply)) or dns.rcode.to_text(reply.rcode())


def start_lab(tmp: Path, extra: str = "") -> Iterator[Lab]:
    fake = FakeAuthority()
    fake.start()
    populate(fake)
    for ip, host in HOSTS:
        fake.add_ptr(ip, host)
        fake.add_host(host, ip)
    config = write_config(
        tmp / "s25rbl.toml",
        (fake.host, fake.port),
        tmp / "state" / "s25rbl.db",
        CONFIG + extra,
        policy=f"tarpit = {TARPIT}\ndelay = {DELAY}\n",
    )
    server = start_server(config)
    try:
        assert server.api is not None
        admin = make_token(server, "ops", "admin")
        viewer = make_token(server, "viewer", "read")
        reporter = Api(*server.api, token=make_token(server, "mx1", "report"))
        lab = Lab(server, fake, admin, viewer, reporter)
        seed_policy(lab)
        yield lab
    finally:
        server.stop()
        fake.stop()


def seed_policy(lab: Lab) -> None:
    """Something on the policy's views from the start: two greylisted triplets (``stress``: the
    MTA is busy, so greylisting rather than a tarpit), a session that sent its message after
    its tarpit and one that sits in it."""
    ip, _ = SEEDED
    for n, sender in enumerate(("newsletter@shop.example", "")):
        assert lab.policy(ip, f"seed-g{n}", sender=sender, stress="yes", recipient="sales@example.org")
    assert lab.deliver(ip, "seed-t1", sender="orders@shop.example") == [f"SLEEP {TARPIT}", "DUNNO", "DUNNO"]
    assert lab.policy(ip, "seed-t2", sender="orders@shop.example") == f"SLEEP {TARPIT}"
