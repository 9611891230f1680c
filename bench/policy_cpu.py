"""Benchmark: the policy service's CPU per request, in process (not a test).

Rates and even CPU time per request measured from outside swing on a shared machine (a busy
host steals cycles that are still counted to the process). This times the code itself, the
best of several rounds: a Postfix 3.7 request (31 attributes) framed, parsed and answered for
a clean client, a whitelisted one and a listed one (a known greylisted triplet), with the
verdicts cached (the unlisted ones also without the quick path of ``s25rbl.policy.quick``,
parsed and judged in full); and a batch of writes (new triplets) committed to a SQLite store.

    .venv/bin/python bench/policy_cpu.py [--rounds 5] [--requests 20000] [--profile KIND] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import tempfile
import time
import timeit
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

from s25rbl.clock import SystemClock  # noqa: E402
from s25rbl.config import LearningSettings, PolicySettings  # noqa: E402
from s25rbl.lists.values import EntryKind, EntrySpec, ListName  # noqa: E402
from s25rbl.node.sync import ListSync  # noqa: E402
from s25rbl.policy.decide import Triplet  # noqa: E402
from s25rbl.policy.handler import PolicyHandler  # noqa: E402
from s25rbl.policy.protocol import Framer, answer, parse_attributes  # noqa: E402
from s25rbl.policy.state import PolicyState  # noqa: E402
from s25rbl.resolve.rdns import ReverseLookup  # noqa: E402
from s25rbl.service import Services  # noqa: E402
from s25rbl.service.policy import PolicyReads, TripletWrite  # noqa: E402
from s25rbl.store.db import Store, migrate  # noqa: E402
from tests.unit.fakes import DictResolver  # noqa: E402

ATTRIBUTES = (
    "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
    "client_address={ip}\nclient_name={name}\nclient_port=41234\nreverse_client_name={name}\n"
    "server_address=192.0.2.25\nserver_port=25\nhelo_name={name}\nsender=user1@sender-2.example\n"
    "recipient=rcpt3@example.test\nrecipient_count=0\nqueue_id=\ninstance=0123456789abcdef0123\n"
    "size=0\netrn_domain=\nstress=\nsasl_method=\nsasl_username=\nsasl_sender=\nccert_subject=\n"
    "ccert_issuer=\nccert_fingerprint=\nccert_pubkey_fingerprint=\nencryption_protocol=TLSv1.3\n"
    "encryption_cipher=TLS_AES_256_GCM_SHA384\nencryption_keysize=256\npolicy_context=\n"
    "compatibility_level=3.6\nmail_version=3.7.11\n\n"
)
CLIENTS = {
    "clean": ("100.64.0.16", "mail.example-16.org"),
    "whitelisted": ("100.64.0.17", "p17-ipad17tokyo.tokyo.example.ne.jp"),
    "listed": ("100.64.0.18", "p18-ipad18tokyo.tokyo.example.ne.jp"),
}


def best(rounds: int, count: int, run: object) -> float:
    """The best of ``rounds`` timings of ``count`` calls of ``run``, in µs a call."""
    times = []
    for _ in range(rounds):
        t0 = time.thread_time()  # CPU time: other processes' turns on the core do not count
        run(count)  # type: ignore[operator]
        times.append((time.thread_time() - t0) / count)
    return min(times) * 1e6


async def measure(work: Path, rounds: int, count: int, profile: str | None = None) -> None:
    url = f"sqlite:///{work / 'cpu.db'}"
    await asyncio.to_thread(migrate, url)
    store = Store(url)
    clock = SystemClock()
    settings = PolicySettings(mode="rgrey", cache_size=50_000)
    dns = DictResolver()
    for ip, name in CLIENTS.values():
        dns.ptr(ip, name).host(name, ip)
    lists = ListSync(store, clock, 1.0)
    services = Services(store, clock, LearningSettings(), changed=lists.reload, policy_settings=settings)
    await services.lists.add(
        [(EntrySpec(ListName.WHITE, EntryKind.IP, CLIENTS["whitelisted"][0]), None)], actor="bench"
    )
    await lists.reload()
    from s25rbl.verdict.pipeline import VerdictEngine

    rdns = ReverseLookup(dns, deadline=0.5)
    engine = VerdictEngine(lists.current, rdns, clock=clock)
    reads = PolicyReads(store)
    state = PolicyState(services.policy, clock, tarpit=65, max_tarpits=50, cache_size=50_000, reads=reads)
    handler = PolicyHandler(engine, state, settings, clock)
    for ip, _ in CLIENTS.values():
        await engine.decide(__import__("ipaddress").ip_address(ip))
    gc.collect()
    timer = time.thread_time
    reference = min(timeit.repeat("sum(range(10))", timer=timer, number=100_000, repeat=5)) / 100_000 * 1e6
    print(
        f"CPU per request, best of {rounds} rounds of {count:,} (µs; the reference, sum(range(10)), "
        f"took {reference:.3f} µs: compare runs by it, this machine's speed varies):",
        flush=True,
    )
    for kind, (ip, name) in CLIENTS.items():
        block = ATTRIBUTES.format(ip=ip, name=name).encode()
        framer = Framer()

        def full(n: int, block: bytes = block, framer: Framer = framer) -> None:
            for _ in range(n):
                for request in framer.feed(block):
                    result = handler.handle(parse_attributes(request), "127.0.0.1")
                    assert isinstance(result, str), result
                    answer(result)

        def one(n: int, block: bytes = block) -> None:  # as the listener does: the quick path first
            for _ in range(n):
                if handler.quick(block) is None:
                    full(1)

        if kind == "listed":  # its triplet greylisted a moment ago: a known triplet, in memory
            first = handler.handle(parse_attributes(block[:-2]), "127.0.0.1")
            assert isinstance(first, str) or await first
            await state.flush()
        if profile == kind:
            import cProfile
            import pstats

            with cProfile.Profile() as profiler:
                one(count)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
        print(f"  {kind:<12} {best(rounds, count, one):6.1f}", flush=True)
        if kind != "listed":  # what the quick path saves: the same request parsed and judged
            print(f"  {kind + ', parsed':<12} {best(rounds, count, full):6.1f}", flush=True)

    def parse(n: int, block: bytes = ATTRIBUTES.format(ip="100.64.0.16", name="x").encode()[:-2]) -> None:
        for _ in range(n):
            parse_attributes(block)

    print(f"  {'parse alone':<12} {best(rounds, count, parse):6.1f}", flush=True)

    # A request whose state is not in memory reads it from the store by a plain call (SQLite):
    # what one read of a triplet and of a client's last tarpit costs, for rows that exist.
    key = Triplet.of(
        __import__("ipaddress").ip_address(CLIENTS["listed"][0]),
        "user1@sender-2.example",
        "rcpt3@example.test",
        settings,
    ).key
    assert reads.read_triplet_now(key) is not None

    def read_triplet(n: int) -> None:
        for _ in range(n):
            reads.read_triplet_now(key)

    def read_client(n: int) -> None:
        for _ in range(n):
            reads.read_client_now("100.64.0.18")

    print(f"  {'store read, triplet':<12} {best(rounds, count // 4, read_triplet):6.1f}", flush=True)
    print(f"  {'store read, client':<12} {best(rounds, count // 4, read_client):6.1f}", flush=True)

    for size in (1, 30):
        made = 0

        async def batch(size: int = size) -> float:
            nonlocal made
            now = time.time()
            for _ in range(size):
                made += 1
                t = Triplet.of(
                    __import__("ipaddress").ip_address("100.64.0.18"),
                    f"s{made}@x.example",
                    "r@y.test",
                    settings,
                )
                state.write(
                    TripletWrite("create", t.key, now, t.network, t.sender, t.recipient, "100.64.0.18")
                )
            cpu = time.thread_time()
            await state.flush()
            return time.thread_time() - cpu

        cpus = [await batch() for _ in range(max(rounds, 10))]
        print(f"  write batch of {size:>2}: {min(cpus) * 1e6:7.0f} µs of loop-thread CPU", flush=True)
    reads.close()
    await rdns.close()
    await store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round of 500 requests: smoke run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--profile", choices=list(CLIENTS), help="cProfile that kind's requests instead")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.requests = 1, 500
    with tempfile.TemporaryDirectory(prefix="s25rbl-bench-policy-cpu-") as tmp:
        asyncio.run(measure(Path(tmp), args.rounds, args.requests, args.profile))
    return 0


if __name__ == "__main__":
    sys.exit(main())
