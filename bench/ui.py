"""How fast the operator's page renders on a large store.

Usage: .venv/bin/python bench/ui.py [--quick] [--entries N] [--learned N] [--policy N]
                                    [--rounds R] [--database URL]

Fills a fresh store (SQLite by default; ``--database`` for a PostgreSQL database that exists
and is empty) with N list entries (IPs, networks, domains, hostnames and regexes on both
lists), N learned addresses with two reports each, and an audit log of them, N greylisted
triplets and N tarpitted sessions of the policy service (``--policy``), starts the real
``s25rbl serve`` on it, signs in with an admin token and asks for every page R times. For each
page it prints the server's own time (the page's ``Server-Timing`` header: the handler, its
queries and the rendering) and the page's size; where the REST API serves the same rows, the
API's round trip in the same run and the ratio page/API (round trip against round trip).

The goal: every page under 200 ms on the server with 100,000 entries, 100,000 learned
addresses and 100,000 triplets and tarpitted sessions, and under 100 KB. This is a benchmark,
not a test: numbers vary with the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import random
import re
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

import upstream  # noqa: E402  (bench/upstream.py)
from fresh_verdicts import write_config  # noqa: E402
from sqlalchemy import insert, text  # noqa: E402

from s25rbl.lists.values import EntryKind, EntrySource, ListName  # noqa: E402
from s25rbl.store.db import Store, migrate  # noqa: E402
from s25rbl.store.models import AuditEvent, Entry, GreylistTriplet, Report, TarpitRecord  # noqa: E402
from tests.integration.api_client import Api  # noqa: E402
from tests.integration.server import start_server  # noqa: E402
from tests.integration.ui_client import Browserless  # noqa: E402

CHUNK = 5_000
TIMING = re.compile(r"dur=([0-9.]+)")


def entry_rows(count: int, now: datetime, rng: random.Random) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    kinds = [EntryKind.IP] * 40 + [EntryKind.CIDR] * 20 + [EntryKind.DOMAIN] * 25
    kinds += [EntryKind.HOSTNAME] * 10 + [EntryKind.REGEX] * 5
    for i in range(count):
        kind = kinds[i % len(kinds)]
        if kind is EntryKind.IP:
            value, list_ = str(ipaddress.IPv4Address(0xC6120000 + i)), ListName.BLACK  # 198.18/15
        elif kind is EntryKind.CIDR:
            value, list_ = f"{ipaddress.IPv4Address(0x64400000 + i * 256)}/24", ListName.BLACK
        elif kind is EntryKind.DOMAIN:
            value, list_ = f"relay{i}.partner{i % 997}.example", ListName.WHITE
        elif kind is EntryKind.HOSTNAME:
            value, list_ = f"mx{i}.mail{i % 503}.example", ListName.WHITE
        else:
            value, list_ = rf"^dyn-[0-9]+\.pool{i}\.example\.net$", ListName.BLACK
        rows.append(
            {
                "list": list_,
                "kind": kind,
                "value": value,
                "reason": f"bench entry {i}: {rng.choice(['partner relay', 'ISP pool', 'spam source'])}",
                "source": EntrySource.IMPORTED,
                "created_at": now,
                "updated_at": now,
                "created_by": "bench",
                "hit_count": rng.randrange(1000),
            }
        )
    return rows


def policy_rows(start: int, stop: int, count: int, now: datetime) -> tuple[list[dict[str, object]], ...]:
    """Greylisted triplets and tarpitted sessions ``start`` to ``stop`` of ``count``, over the
    last two days: clients in 172.16/12, half the triplets passed, a third of the sessions
    delivered and a third survived."""
    triplets, tarpits = [], []
    for i in range(start, stop):
        ip = ipaddress.IPv4Address(0xAC100000 + i)
        when = now - timedelta(seconds=(count - i) * 2 * 86400 / max(count, 1))
        sender, recipient = f"news{i % 50}@shop.example", f"user{i % 700}@example.org"
        triplets.append(
            {
                "key": f"{i:032x}",
                "network": f"{ipaddress.IPv4Address(int(ip) & 0xFFFFFF00)}/24",
                "sender": sender,
                "recipient": recipient,
                "client_ip": str(ip),
                "first_seen": when,
                "last_seen": when + timedelta(minutes=6 * (i % 2)),
                "passed_at": when + timedelta(minutes=6) if i % 2 else None,
            }
        )
        tarpits.append(
            {
                "client_ip": str(ip),
                "instance": f"bench{i}",
                "started_at": when,
                "survived_at": when + timedelta(seconds=65) if i % 3 else None,
                "delivered_at": when + timedelta(seconds=66) if i % 3 == 1 else None,
                "client_name": f"p{i}-ipad{i % 90}.pool.example.net",
                "sender": sender,
                "recipient": recipient,
                "mta": "127.0.0.1",
            }
        )
    return triplets, tarpits


async def fill(url: str, entries: int, learned: int, policy: int = 0) -> None:
    """The store: entries, learned addresses with their reports, the audit log, and the policy
    service's triplets and tarpitted sessions."""
    await asyncio.to_thread(migrate, url)
    store = Store(url)
    rng = random.Random(15)
    now = datetime.now(UTC)
    try:
        async with store.transaction() as session:
            rows = entry_rows(entries, now, rng)
            for start in range(0, len(rows), CHUNK):
                await session.execute(insert(Entry), rows[start : start + CHUNK])
        for start in range(0, learned, CHUNK):
            async with store.transaction() as session:
                entry_batch, report_batch, audit_batch = [], [], []
                for i in range(start, min(start + CHUNK, learned)):
                    ip = str(ipaddress.IPv4Address(0x0A000000 + i))  # 10/8: names in the data only
                    when = now - timedelta(seconds=(learned - i) * 25 * 86400 / max(learned, 1))
                    reason = (
                        f"learned: 2 retries from <news{i % 50}@shop.example> to <user{i % 700}@example.org>"
                    )
                    entry_batch.append(
                        {
                            "list": ListName.WHITE,
                            "kind": EntryKind.IP,
                            "value": ip,
                            "reason": reason,
                            "source": EntrySource.LEARNED,
                            "created_at": when,
                            "updated_at": when,
                            "created_by": "learning",
                            "expires_at": now + timedelta(days=35),
                            "hit_count": 0,
                        }
                    )
                    for n in range(2):
                        at = when - timedelta(minutes=10 * (2 - n))
                        report_batch.append(
                            {
                                "idempotency_key": f"bench-{i}-{n}",
                                "reported_at": at,
                                "received_at": at,
                                "reporter": "token:mx1",
                                "client_ip": ip,
                                "client_name": f"p{i}-ipad{i % 90}.pool.example.net",
                                "helo": f"p{i}-ipad{i % 90}.pool.example.net",
                                "sender": f"prvs=1234{n}=news{i % 50}@shop.example",
                                "sender_norm": f"news{i % 50}@shop.example",
                                "recipient": f"user{i % 700}@example.org",
                            }
                        )
                    audit_batch.append(
                        {"at": when, "actor": "learning", "action": "learned", "target": ip, "detail": reason}
                    )
                await session.execute(insert(Entry), entry_batch)
                await session.execute(insert(Report), report_batch)
                await session.execute(insert(AuditEvent), audit_batch)
        for start in range(0, policy, CHUNK):
            async with store.transaction() as session:
                triplets, tarpits = policy_rows(start, min(start + CHUNK, policy), policy, now)
                await session.execute(insert(GreylistTriplet), triplets)
                await session.execute(insert(TarpitRecord), tarpits)
        if store.engine.dialect.name == "postgresql":
            # A store that has lived a while has been vacuumed and analysed by autovacuum; a
            # freshly filled one has no statistics and no visibility map yet.
            async with store.engine.connect() as conn:
                await (await conn.execution_options(isolation_level="AUTOCOMMIT")).execute(
                    text("VACUUM ANALYZE")
                )
    finally:
        await store.close()


def server_ms(page_headers: dict[str, str]) -> float:
    match = TIMING.search(page_headers.get("server-timing", ""))
    return float(match.group(1)) if match else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 entries and learned addresses, 3 rounds")
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--learned", type=int, default=100_000)
    parser.add_argument("--policy", type=int, default=100_000, help="triplets, and tarpitted sessions")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--database", default="", help="an empty PostgreSQL database URL (default: SQLite)")
    args = parser.parse_args()
    if args.quick:
        args.entries, args.learned, args.policy, args.rounds = 2_000, 2_000, 2_000, 3
    with tempfile.TemporaryDirectory(prefix="s25rbl-bench-ui-") as tmp:
        work = Path(tmp)
        url = args.database or f"sqlite:///{work / 's25rbl.db'}"
        started = time.perf_counter()
        asyncio.run(fill(url, args.entries, args.learned, args.policy))
        print(
            f"store: {args.entries} entries, {args.learned} learned addresses with 2 reports each, "
            f"{args.learned} audit events, {args.policy} greylisted triplets and tarpitted sessions; "
            f"filled in {time.perf_counter() - started:.1f} s"
        )
        config = work / "s25rbl.toml"
        write_config(config, upstream.free_port(), work / "unused.db")
        text = config.read_text().replace(f'url = "sqlite:///{work / "unused.db"}"', f'url = "{url}"')
        # The policy service on (a free port), so that Figures draws its charts too.
        config.write_text(text.replace('[policy]\nlisten = ""', '[policy]\nlisten = "127.0.0.1:0"'))
        server = start_server(config, timeout=120)
        try:
            assert server.api is not None
            token = server.cli("token", "create", "--name", "bench", "--scope", "admin").stdout.strip()
            page = Browserless(*server.api)
            assert page.sign_in(token).status == 303
            api = Api(*server.api, token=token)
            middle_entry = args.entries // 2
            middle_learned = args.entries + args.learned // 2
            pages = [
                ("review: learned", "/ui/review/learned", "/v1/learned?limit=25"),
                ("review: learned, older page", f"/ui/review/learned?before={middle_learned}", ""),
                ("review: learned, search", "/ui/review/learned?q=10.0.1", ""),
                ("review: suggestions", "/ui/review/suggestions", "/v1/suggestions?limit=25"),
                ("review: forbidden", "/ui/review/forbidden", ""),
                ("review: greylist", "/ui/review/greylist", "/v1/greylist?limit=50"),
                ("review: greylist, older page", f"/ui/review/greylist?before={args.policy // 2}", ""),
                (
                    "review: greylist, a client",
                    "/ui/review/greylist?q=172.16.1.7",
                    "/v1/greylist?client=172.16.1.7",
                ),
                (
                    "review: greylist, search",
                    "/ui/review/greylist?q=news7@",
                    "/v1/greylist?q=news7@&limit=50",
                ),
                ("review: greylist, no match", "/ui/review/greylist?q=no-such-thing", ""),
                ("review: greylist, waiting", "/ui/review/greylist?status=waiting", ""),
                ("review: tarpits", "/ui/review/tarpits", "/v1/tarpits?limit=50"),
                (
                    "review: tarpits, a client",
                    "/ui/review/tarpits?q=172.16.1.7",
                    "/v1/tarpits?client=172.16.1.7",
                ),
                ("review: tarpits, abandoned", "/ui/review/tarpits?status=abandoned", ""),
                ("explain: learned address", "/ui/explain?q=10.0.0.7", "/v1/check/10.0.0.7"),
                ("explain: hostname", "/ui/explain?q=p1234-ipad12.tokyo.ocn.ne.jp", ""),
                ("lists", "/ui/lists", "/v1/entries?limit=50"),
                ("lists: blacklist", "/ui/lists?list=black", "/v1/entries?list=black&limit=50"),
                ("lists: domains, older page", f"/ui/lists?kind=domain&before={middle_entry}", ""),
                ("lists: search, many matches", "/ui/lists?q=partner", "/v1/entries?q=partner&limit=50"),
                (
                    "lists: search, no match",
                    "/ui/lists?q=no-such-thing",
                    "/v1/entries?q=no-such-thing&limit=50",
                ),
                ("figures", "/ui/figures", "/v1/stats"),
                ("audit", "/ui/audit", "/v1/audit?limit=50"),
                ("audit: one action", "/ui/audit?action=learned", ""),
                ("audit: search, no match", "/ui/audit?q=no-such-thing", ""),
            ]
            head = f"{'page':32} {'server ms':>10} {'max':>7} {'KB':>6}"
            print(f"{head}   {'API rtt ms':>10} {'page rtt/API rtt':>17}")
            worst, largest = 0.0, 0
            for title, path, api_path in pages:
                times, trips, sizes = [], [], []
                page.get(path)  # warm up (templates compiled, caches filled)
                for _ in range(args.rounds):
                    t0 = time.perf_counter()
                    reply = page.get(path)
                    trips.append((time.perf_counter() - t0) * 1000)
                    assert reply.status == 200, (path, reply.status, reply.text[-2000:])
                    times.append(server_ms(reply.headers))
                    sizes.append(len(reply.body))
                line = (
                    f"{title:32} {statistics.median(times):10.1f} {max(times):7.1f} {max(sizes) / 1024:6.1f}"
                )
                if api_path:
                    api.get(api_path)
                    api_trips = []
                    for _ in range(args.rounds):
                        t0 = time.perf_counter()
                        assert api.get(api_path).status == 200
                        api_trips.append((time.perf_counter() - t0) * 1000)
                    ratio = statistics.median(trips) / statistics.median(api_trips)
                    line += f"   {statistics.median(api_trips):10.1f} {ratio:16.2f}x"
                print(line, flush=True)
                worst, largest = max(worst, max(times)), max(largest, max(sizes))
            print(f"slowest page: {worst:.1f} ms on the server (goal < 200 ms)")
            print(f"largest page: {largest / 1024:.1f} KB (goal < 100 KB)")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
