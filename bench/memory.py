"""Memory: bytes per cached answer, and RSS and load time of 100,000 list entries of each kind.

Usage: .venv/bin/python bench/memory.py [--quick] [--answers N] [--entries N]

Each measurement runs in a fresh child process (so one does not inherit another's heap) and
reads VmRSS from /proc/self/status before and after:

1. *Answer cache*: a ``Responder`` with an answer cache of N entries (default 1,000,000)
   answers N distinct questions (one per address of 100.64.0.0/10, half A, half TXT)
   straight through ``Responder.handle``, three times over, with verdicts of three origins:
   two CIDR entries (half listed, half whitelisted: NXDOMAIN + SOA), one blacklist IP entry
   per address, and cached reverse lookups (each answer then carries its own expiry).
   Lists and lookups are in memory before the first reading. Bytes per cached verdict =
   RSS growth / answers cached.
2. *Lists*: N entries (default 100,000) of each kind (IP, CIDR, domain, regex), then all four
   kinds together: RSS growth and time of ``ListIndex.build``; then the same rows written to
   a SQLite store (bulk insert) and the full reload through ``s25rbl.service.load_index``
   (select + build), timed, as a node does it on start and on every list change.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ipaddress
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KINDS = ("ip", "cidr", "domain", "regex")
MIXES = {
    "cidr": "verdicts from 2 CIDR entries (half 127.0.0.3 + TXT, half NXDOMAIN + SOA)",
    "ip": "one blacklist IP entry per address (127.0.0.3 A, TXT)",
    "rdns": "verdicts from cached reverse lookups, each with its own expiry (127.0.0.4 A, TXT)",
}


def rss() -> int:
    gc.collect()
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


# ---------------------------------------------------------------------------------------
# generated entries


def values(kind: str, n: int, seed: int = 25) -> list[str]:
    rng = random.Random(seed)
    if kind == "ip":
        return [str(ipaddress.IPv4Address(a)) for a in rng.sample(range(0x0A000000, 0x0B000000), n)]
    if kind == "cidr":
        out: set[str] = set()
        while len(out) < n:  # prefixes /16 to /30: one hash probe per prefix length present
            plen = rng.randint(16, 30)
            addr = rng.randrange(0x0B000000, 0x60000000) >> (32 - plen) << (32 - plen)
            out.add(f"{ipaddress.IPv4Address(addr)}/{plen}")
        return sorted(out)
    if kind == "domain":
        return [f"pool{i}.isp{i % 997}.example.net" for i in range(n)]
    if kind == "regex":
        return [rf"^[a-z]+{i}[0-9-]*\.dyn\.isp{i % 997}\.example\.com$" for i in range(n)]
    raise ValueError(kind)


def rows_of(kinds: list[str], n: int) -> list[object]:
    from s25rbl.lists.values import EntryKind, EntryRow, EntrySource, ListName

    rows: list[object] = []
    for kind in kinds:
        for value in values(kind, n):
            rows.append(EntryRow(len(rows) + 1, ListName.BLACK, EntryKind(kind), value, EntrySource.MANUAL))
    return rows


# ---------------------------------------------------------------------------------------
# child measurements (each prints one JSON line)


def child_answers(n: int, mix: str) -> dict[str, object]:
    """``mix``: ``cidr`` (verdicts from two CIDR entries), ``ip`` (one blacklist IP entry per
    listed address), ``rdns`` (verdicts from cached reverse lookups, each answer with its own
    expiry; the lookups are cached before the first RSS reading)."""
    import dnslib  # noqa: F401  (imported before the first RSS reading, like the rest)

    from s25rbl.dns.answers import AnswerSettings
    from s25rbl.dns.handler import Responder
    from s25rbl.dns.zones import ZoneKind, ZoneTable
    from s25rbl.lists.values import EntryKind, EntryRow, EntrySource, ListName
    from s25rbl.resolve.codec import LookupResult, LookupStatus
    from s25rbl.resolve.rdns import ReverseLookup
    from s25rbl.verdict.lists import ListIndex
    from s25rbl.verdict.pipeline import VerdictEngine

    zone = b"\x02bl\x06s25rbl\x04test\x00"
    base = 0x64400000  # 100.64.0.0/10; with "cidr", 100.96.0.0/11 is the whitelisted half
    step = max(1, (1 << 22) // n)
    addresses = [base + ((i * step) % (1 << 22)) for i in range(n)]
    rows: list[EntryRow] = []
    if mix == "cidr":
        rows = [
            EntryRow(1, ListName.BLACK, EntryKind.CIDR, "100.64.0.0/11", EntrySource.MANUAL),
            EntryRow(2, ListName.WHITE, EntryKind.CIDR, "100.96.0.0/11", EntrySource.MANUAL),
        ]
    elif mix == "ip":
        ips = sorted(set(addresses))
        rows = [
            EntryRow(i + 1, ListName.BLACK, EntryKind.IP, str(ipaddress.IPv4Address(a)), EntrySource.MANUAL)
            for i, a in enumerate(ips)
        ]
    index = ListIndex.build(rows, version=1)
    del rows

    class NoPtr:
        """Every PTR lookup: NXDOMAIN, cacheable for an hour (rule 0: 127.0.0.4)."""

        async def lookup(self, name: str, rdtype: int) -> LookupResult:
            return LookupResult(LookupStatus.NXDOMAIN, (), 3600)

        async def close(self) -> None:
            return None

    rdns = ReverseLookup(NoPtr(), cache_size=n + 1, cache_bytes=(n + 1) * 1024)  # type: ignore[arg-type]
    if mix == "rdns":

        async def prefill() -> None:
            for a in addresses:
                await rdns.lookup(ipaddress.IPv4Address(a))

        asyncio.run(prefill())
    engine = VerdictEngine(lambda: index, rdns)
    settings = AnswerSettings(nameservers=("ns1.s25rbl.test",), hostmaster="hostmaster.s25rbl.test")
    responder = Responder(
        ZoneTable([("bl.s25rbl.test", ZoneKind.BLOCKLIST)]),
        engine,
        settings,
        cache_size=n,
        cache_bytes=n * 1024,
    )
    assert responder.cache is not None

    def packet(i: int) -> bytes:
        a = addresses[i]
        labels = [str(a & 255), str(a >> 8 & 255), str(a >> 16 & 255), str(a >> 24)]
        name = b"".join(bytes([len(x)]) + x.encode() for x in labels) + zone
        qtype = b"\x00\x10" if i % 2 else b"\x00\x01"
        header = (i & 0xFFFF).to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
        return header + name + qtype + b"\x00\x01"

    packet(0)
    before = rss()
    t0 = time.perf_counter()
    for i in range(n):
        responder.handle(packet(i), False)
    fill = time.perf_counter() - t0
    cached = len(responder.cache)
    engine.hits.take()  # entry hit counts are written out and dropped every 30 s in a server
    after = rss()
    counted = footprint(responder.cache)
    sample = [packet(i) for i in range(min(n, 100_000))]
    t0 = time.perf_counter()
    for data in sample:
        responder.handle(data, False)
    hit_us = (time.perf_counter() - t0) / len(sample) * 1e6
    return {
        "mix": mix,
        "cached": cached,
        "rss_before": before,
        "rss_after": after,
        "per_entry": (after - before) / max(cached, 1),
        "counted": counted / max(cached, 1),
        "fill_s": fill,
        "hit_us": hit_us,
        "hits": responder.cache.hits,
        "counts": {"/".join(k): v for k, v in responder.counts.most_common(4)},
    }


def footprint(cache: object) -> int:
    """The cache's bytes counted object by object (sys.getsizeof): its dict, every key, and
    each distinct value, template and expiry once; shared objects once."""
    entries: dict[bytes, tuple[object, object, object]] = cache._entries  # type: ignore[attr-defined]
    total = sys.getsizeof(entries)
    seen: set[int] = set()
    for key, value in entries.items():
        total += sys.getsizeof(key)
        for obj in (value, *value, *value[0]):  # type: ignore[misc]
            if id(obj) not in seen:
                seen.add(id(obj))
                total += sys.getsizeof(obj)
    return total


def child_build(kinds: list[str], n: int) -> dict[str, object]:
    from s25rbl.verdict.lists import ListIndex

    rows = rows_of(kinds, n)
    before = rss()
    t0 = time.perf_counter()
    index = ListIndex.build(rows)  # type: ignore[arg-type]
    took = time.perf_counter() - t0
    after = rss()
    return {
        "rows": len(rows),
        "build_s": took,
        "rss_growth": after - before,
        "rss": after,
        "skipped": index.skipped,
    }


def child_reload(kinds: list[str], n: int, db: str) -> dict[str, object]:
    from s25rbl.clock import SystemClock
    from s25rbl.node.sync import load_index
    from s25rbl.store.db import Store

    async def go() -> dict[str, object]:
        store = Store(f"sqlite:///{db}")
        try:
            before = rss()
            t0 = time.perf_counter()
            index = await load_index(store, clock=SystemClock())
            took = time.perf_counter() - t0
            after = rss()
            return {
                "rows": sum(index.sizes().values()) + len(index.rules._operator),
                "reload_s": took,
                "rss_growth": after - before,
                "rss": after,
            }
        finally:
            await store.close()

    return asyncio.run(go())


def fill_store(db: str, kinds: list[str], n: int) -> float:
    """Migrate a new SQLite store and bulk-insert the rows (not what is measured)."""
    from datetime import UTC, datetime

    from sqlalchemy import insert

    from s25rbl.lists.values import EntryKind, EntrySource, ListName
    from s25rbl.store.db import Store, migrate
    from s25rbl.store.models import Entry

    t0 = time.perf_counter()
    migrate(f"sqlite:///{db}")
    now = datetime.now(UTC)

    async def go() -> None:
        store = Store(f"sqlite:///{db}")
        try:
            async with store.transaction() as session:
                for kind in kinds:
                    batch = [
                        {
                            "list": ListName.BLACK,
                            "kind": EntryKind(kind),
                            "value": v,
                            "source": EntrySource.MANUAL,
                            "created_at": now,
                            "updated_at": now,
                            "reason": "",
                            "created_by": "bench",
                            "hit_count": 0,
                        }
                        for v in values(kind, n)
                    ]
                    await session.execute(insert(Entry), batch)
        finally:
            await store.close()

    asyncio.run(go())
    return time.perf_counter() - t0


def run_child(*argv: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *argv], capture_output=True, text=True, check=False, cwd=ROOT
    )
    if out.returncode != 0:
        raise RuntimeError(f"child {argv} failed:\n{out.stderr[-3000:]}")
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def mib(n: object) -> str:
    return f"{float(n) / 2**20:.1f} MiB"  # type: ignore[arg-type]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 answers, 1,000 entries (smoke run)")
    parser.add_argument("--answers", type=int, help="cached answers (default 1,000,000)")
    parser.add_argument("--entries", type=int, help="entries of each kind (default 100,000)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        what, *rest = args.child
        if what == "answers":
            result = child_answers(int(rest[0]), rest[1])
        elif what == "build":
            result = child_build(rest[0].split(","), int(rest[1]))
        else:
            result = child_reload(rest[0].split(","), int(rest[1]), rest[2])
        print(json.dumps(result))
        return 0

    answers = args.answers or (20_000 if args.quick else 1_000_000)
    entries = args.entries or (1_000 if args.quick else 100_000)
    for mix, what in MIXES.items():
        r = run_child("answers", str(answers), mix)
        fill_us = float(r["fill_s"]) / answers * 1e6  # type: ignore[arg-type]
        print(
            f"answer cache, {what}: {r['cached']:,} answers cached: RSS {mib(r['rss_before'])} -> "
            f"{mib(r['rss_after'])}, {r['per_entry']:.0f} bytes per cached verdict by RSS, "
            f"{r['counted']:.0f} counted object by object; filled in "
            f"{r['fill_s']:.1f} s ({fill_us:.1f} µs per answer built and stored, packet made in "
            f"Python included), then {r['hit_us']:.2f} µs per hit (Responder.handle, in process)",
            flush=True,
        )
    with tempfile.TemporaryDirectory(prefix="s25rbl-memory-") as tmp:
        for kinds in [[k] for k in KINDS] + [list(KINDS)]:
            label = "+".join(kinds)
            b = run_child("build", ",".join(kinds), str(entries))
            db = str(Path(tmp) / f"{label}.sqlite")
            filled = fill_store(db, kinds, entries)
            s = run_child("reload", ",".join(kinds), str(entries), db)
            print(
                f"{label:22} {b['rows']:>8,} entries: ListIndex.build {b['build_s']:.2f} s, "
                f"RSS +{mib(b['rss_growth'])} ({int(b['rss_growth']) / max(int(b['rows']), 1):.0f} B/entry), "  # type: ignore[call-overload]
                f"process {mib(b['rss'])}; full reload from SQLite (load_index) {s['reload_s']:.2f} s "
                f"for {s['rows']:,} entries, RSS +{mib(s['rss_growth'])}  (store filled in {filled:.1f} s)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
