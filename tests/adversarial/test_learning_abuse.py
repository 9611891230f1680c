"""Adversarial: a reporter's token used as an attacker would, against the real server.

- Forged reports: a ``report`` token tries to get an unlisted, a blacklisted and a well-known
  address learned, with backdated times, invented names and even properly spaced requests,
  and to open a wide pool suggestion. Nothing is learned and suggestions stay narrow.
- A flood of reports (several reporters, batches of 1,000 for one sender and recipient)
  while a resolver keeps asking and an operator keeps writing: every DNS query is answered
  correctly and every write succeeds. The figures are printed, never asserted.

Bounded: a few seconds of spaced requests, and a flood of FLOOD_BATCHES batches.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.integration.api_client import Api
from tests.integration.api_client import make_token as token
from tests.integration.conftest import CLEAN, DYNAMIC, HOTMAIL, upstream
from tests.integration.server import RunningServer, start_server, write_config
from tests.integration.test_responder import answers, name, udp
from tests.support.fakedns import FakeAuthority

__all__ = ["upstream"]  # the integration tests' authoritative DNS, as a fixture here too

WL = "wl.s25rbl.test"
SPACING = 1.2  # seconds between forged attempts: more than the server's min_interval
BLACKLISTED = ("203.0.113.20", "p20-ipad1.spam.example.net")  # rule 1, and its domain blacklisted
GMAIL = ("203.0.113.21", "mail-yw1-f170.google.com")  # rule 1, but Gmail: on the starter whitelist
POOL = [(f"198.51.100.{n}", f"dhcp-{n}-7.pool.isp.example") for n in range(31, 35)]  # rule 6
FLOOD_ADDRESSES = [(f"198.18.{n // 250}.{n % 250 + 1}", f"p{n}-ipad1.flood.isp.example") for n in range(200)]
FLOOD_BATCHES = 8  # of 1,000 reports, from 4 reporters at once


@pytest.fixture
def server(tmp_path: Path, upstream: FakeAuthority, database_url: str) -> Iterator[RunningServer]:
    for ip, host in [BLACKLISTED, GMAIL, *POOL, *FLOOD_ADDRESSES]:
        upstream.add_ptr(ip, host)
        upstream.add_host(host, ip)
    extra = "\n[learning]\nmin_interval = 1\naddress_reports_per_minute = 1000\n"
    config = write_config(tmp_path / "s25rbl.toml", (upstream.host, upstream.port), database_url, extra)
    running = start_server(config)
    try:
        yield running
    finally:
        running.stop()


def forged(ip: str, minutes_ago: float, key: str, client_name: str) -> dict[str, str]:
    return {
        "client_ip": ip,
        "client_name": client_name,
        "helo": client_name,
        "sender": "ceo@bank.example",
        "recipient": "alice@example.org",
        "time": (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat(),
        "idempotency_key": key,
    }


def test_a_report_token_cannot_whitelist_what_s25rbl_does_not_list(server: RunningServer) -> None:
    assert server.api is not None
    forger = Api(*server.api, token=token(server, "forger", "report"))
    ops = Api(*server.api, token=token(server, "ops", "write"))
    added = ops.post("/v1/entries", {"list": "black", "kind": "domain", "value": "spam.example.net"})
    assert added.status == 201, added.body
    before = {ip: answers(udp(server, name(ip), "A")) for ip, _ in (CLEAN, BLACKLISTED, GMAIL, DYNAMIC)}
    assert before == {
        CLEAN[0]: [],
        BLACKLISTED[0]: ["127.0.0.3"],
        GMAIL[0]: [],
        DYNAMIC[0]: ["127.0.0.2"],
    }

    # A listed address: three attempts, backdated and sent at once, under an invented name.
    batch = [forged(DYNAMIC[0], m, f"d{m}", "mx1.gmail.com") for m in (40, 25, 10)]
    reply = forger.post("/v1/reports", {"reports": batch})
    assert reply.status == 202 and reply.json["accepted"] == 3 and reply.json["learned"] == []

    # Unlisted, blacklisted and well-known addresses, even with properly spaced requests; and a
    # pool of dynamic addresses reported as Gmail's servers.
    targets = [CLEAN[0], BLACKLISTED[0], GMAIL[0], HOTMAIL[0]]
    replies = []
    for attempt in range(3):
        if attempt:
            time.sleep(SPACING)
        batch = [forged(ip, 30 - 10 * attempt, f"t{ip}-{attempt}", "mx1.gmail.com") for ip in targets]
        ip, _ = POOL[attempt]
        batch.append(forged(ip, 30 - 10 * attempt, f"p{attempt}", f"mx{attempt}.gmail.com"))
        reply = forger.post("/v1/reports", {"reports": batch})
        assert reply.status == 202, reply.body
        replies.append(reply.json)
    assert all(r["learned"] == [] for r in replies), replies
    suggested = {domain for r in replies for domain in r["suggested"]}
    # The pool did retry: its suggestion is s25rbl's, as narrow as its confirmed names.
    assert suggested == {"pool.isp.example"}, suggested

    viewer = Api(*server.api, token=token(server, "viewer", "read"))
    assert viewer.get("/v1/learned").json["items"] == []
    domains = {s["domain"] for s in viewer.get("/v1/suggestions").json["items"]}
    assert domains <= {"pool.isp.example"}, domains
    # Never 127.0.0.3 (learned) in the whitelist zone; Gmail and Hotmail are the operator's (.2).
    whitelist = {ip: answers(udp(server, name(ip, WL), "A")) for ip in [*targets, DYNAMIC[0]]}
    assert whitelist == {
        CLEAN[0]: [],
        BLACKLISTED[0]: [],
        GMAIL[0]: ["127.0.0.2"],
        HOTMAIL[0]: ["127.0.0.2"],
        DYNAMIC[0]: [],
    }
    after = {ip: answers(udp(server, name(ip), "A")) for ip, _ in (CLEAN, BLACKLISTED, GMAIL, DYNAMIC)}
    assert after == before
    # The pool's suggestion stands on s25rbl's own names, never the forger's.
    for item in viewer.get("/v1/suggestions").json["items"]:
        assert all(n.endswith(".pool.isp.example") for n in item["evidence"]["names"]), item
    print(f"forged reports opened suggestions: {sorted(suggested)}; learned: none")


class Resolver(threading.Thread):
    """A steady client asking about a listed and an unlisted address until stopped."""

    def __init__(self, server: RunningServer) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.wrong: list[str] = []

    def run(self) -> None:
        expected = {DYNAMIC[0]: ["127.0.0.2"], CLEAN[0]: []}
        n = 0
        while not self.stop.is_set():
            ip = (DYNAMIC[0], CLEAN[0])[n % 2]
            n += 1
            query = dns.message.make_query(name(ip), dns.rdatatype.A)
            started = time.perf_counter()
            try:
                reply = dns.query.udp(query, self.server.host, port=self.server.port, timeout=2.0)
            except dns.exception.Timeout:
                self.wrong.append(f"{ip}: no answer within 2 s")
                continue
            self.latencies.append(time.perf_counter() - started)
            if answers(reply) != expected[ip]:
                self.wrong.append(f"{ip}: {answers(reply)}")
            time.sleep(0.005)


def test_a_flood_of_reports_neither_stalls_dns_nor_starves_an_operators_write(server: RunningServer) -> None:
    assert server.api is not None
    # Four batches of 1,000 arrive at once and are taken one unit of work after another: the
    # last one waits for the other three (tens of seconds on a slow or busy machine, more under
    # coverage). What is asserted is that each is taken and DNS is not stalled meanwhile, not
    # how long a batch takes, so the reporters wait as long as a patient reporter would.
    reporters = [Api(*server.api, token=token(server, f"mx{n}", "report"), timeout=300) for n in range(4)]
    ops = Api(*server.api, token=token(server, "ops", "write"))
    for ip, _ in FLOOD_ADDRESSES[:3]:  # the lookups warm, as an MTA's queries would have made them
        udp(server, name(ip), "A")

    def batch(number: int) -> list[dict[str, str]]:
        return [
            {
                "client_ip": FLOOD_ADDRESSES[n % len(FLOOD_ADDRESSES)][0],
                "sender": "news@shop.example",
                "recipient": "alice@example.org",
                "idempotency_key": f"flood-{number}-{n}",
            }
            for n in range(1000)
        ]

    statuses: list[int] = []
    taken: list[float] = []

    def report(api: Api, numbers: list[int]) -> None:
        for number in numbers:
            started = time.perf_counter()
            reply = api.post("/v1/reports", {"reports": batch(number)})
            taken.append(time.perf_counter() - started)
            statuses.append(reply.status)

    resolver = Resolver(server)
    resolver.start()
    threads = [
        threading.Thread(
            target=report, args=(api, list(range(n, FLOOD_BATCHES, len(reporters)))), daemon=True
        )
        for n, api in enumerate(reporters)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    writes: list[tuple[int, float]] = []
    n = 0
    while any(t.is_alive() for t in threads) or n < 3:
        began = time.perf_counter()
        reply = ops.post("/v1/entries", {"list": "white", "kind": "ip", "value": f"2001:db8::{n + 1:x}"})
        writes.append((reply.status, time.perf_counter() - began))
        n += 1
        time.sleep(0.2)
    for thread in threads:
        thread.join(300)
    flood = time.perf_counter() - started
    time.sleep(0.2)
    resolver.stop.set()
    resolver.join(10)

    lat = sorted(resolver.latencies)
    print(
        f"\nflood: {FLOOD_BATCHES * 1000} reports in {flood:.1f} s ({FLOOD_BATCHES * 1000 / flood:.0f}/s), "
        f"batches took median {statistics.median(taken):.2f} s, max {max(taken):.2f} s\n"
        f"DNS: {len(lat)} queries answered, median {statistics.median(lat) * 1000:.1f} ms, "
        f"p99 {lat[int(len(lat) * 0.99)] * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms\n"
        f"operator writes: {len(writes)}, median {statistics.median(w for _, w in writes) * 1000:.0f} ms, "
        f"max {max(w for _, w in writes) * 1000:.0f} ms"
    )
    assert statuses == [202] * FLOOD_BATCHES
    assert resolver.wrong == [], resolver.wrong[:10]
    assert len(lat) > 10
    assert [status for status, _ in writes] == [201] * len(writes)
