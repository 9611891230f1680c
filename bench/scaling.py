"""Cost per query against list size: 10, 1,000 and 100,000 entries of each kind, in process.

Usage: .venv/bin/python bench/scaling.py [--quick] [--sizes 10,1000,100000] [--queries N]

For each kind (IP, CIDR, domain, regex, and regexes that name no suffix: ``regex-unfiled``)
and each size, builds a ``ListIndex`` of that many blacklist entries of that kind and times,
per call (best of 5 rounds over N questions):

- ``handle``: ``Responder.handle`` with the answer cache disabled (``cache_size=0``): parse,
  zone, address, the whole verdict, the answer bytes; for unlisted addresses whose reverse
  lookup is cached (a clean, forward-confirmed name: every step of the verdict runs, and
  the name is looked up in the domain and regex indexes, then the S25R rules);
- ``handle, listed``: the same for addresses or names that an entry of that kind decides;
- ``decide_fast``: ``VerdictEngine.decide_fast`` alone on the unlisted addresses;
- ``decide_name``: ``VerdictEngine.decide_name`` (the hostname zone's verdict, no lookups)
  on clean names.

The cost must stay flat as the lists grow: addresses and networks are one hash probe per
prefix length present, names one probe per label, regexes one probe per label for the RE2
sets filed under the name's suffixes. Regexes that name no suffix are the exception: every
name is tried against all of them, one RE2 set per 5,000.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory import KINDS  # noqa: E402
from memory import values as memory_values  # noqa: E402

from s25rbl.dns.answers import AnswerSettings  # noqa: E402
from s25rbl.dns.handler import Responder  # noqa: E402
from s25rbl.dns.zones import ZoneKind, ZoneTable  # noqa: E402
from s25rbl.lists.values import (  # noqa: E402
    EntryKind,
    EntryRow,
    EntrySource,
    ListName,
)
from s25rbl.resolve.codec import PTR, LookupResult, LookupStatus, reverse_name  # noqa: E402
from s25rbl.resolve.rdns import ReverseLookup  # noqa: E402
from s25rbl.verdict.lists import ListIndex  # noqa: E402
from s25rbl.verdict.pipeline import VerdictEngine  # noqa: E402
from s25rbl.verdict.s25r import match_general  # noqa: E402

BL, HL = "bl.s25rbl.test", "hl.s25rbl.test"
# Regexes that name no suffix (no literal text before $) cannot be filed by suffix: every name
# is tried against all of them, in sets of 5,000. The worst case, measured beside the usual one.
UNFILED = "regex-unfiled"


def values(kind: str, n: int) -> list[str]:
    if kind == UNFILED:
        return [rf"^[a-z]+{i}[0-9-]*\.dyn[0-9]*\." for i in range(n)]
    return memory_values(kind, n)


BASE = int(ipaddress.IPv4Address("100.64.0.0"))  # outside every generated IP and CIDR entry


class Records:
    """A resolver answering from a dict, TTL one hour."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, int], tuple[str, ...]] = {}

    async def lookup(self, name: str, rdtype: int) -> LookupResult:
        values = self.data.get((name, rdtype))
        if values:
            return LookupResult(LookupStatus.OK, values, 3600)
        return LookupResult(LookupStatus.NXDOMAIN, (), 3600)

    async def close(self) -> None:
        return None


def packet(name: str, qid: int) -> bytes:
    wire = b"".join(bytes((len(label),)) + label.encode() for label in name.split("."))
    return (
        qid.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + wire + b"\x00\x00\x01\x00\x01"
    )


def listed_probe(kind: str, entries: list[str], i: int) -> tuple[str, str]:
    """(zone, relative name) of a question that the entry ``entries[i]`` decides."""
    value = entries[i]
    if kind in ("ip", "cidr"):
        net = ipaddress.ip_network(value)
        return BL, net[min(1, net.num_addresses - 1)].reverse_pointer.removesuffix(".in-addr.arpa")
    if kind == "domain":
        return HL, f"host.{value}"
    n = int(value.split("[0-9-]")[0].removeprefix("^[a-z]+"))  # regex: ^[a-z]+{i}[0-9-]*\.dyn...
    return HL, f"host{n}.dyn.isp{n % 997}.example.com"


def best(fn: Callable[[], None], calls: int, rounds: int = 5) -> float:
    """Best time per call over ``rounds``, in µs."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) / calls * 1e6


def measure(kind: str, size: int, queries: int) -> dict[str, float]:
    entries = values(kind, size)
    entry_kind = EntryKind.REGEX if kind == UNFILED else EntryKind(kind)
    rows = [EntryRow(i + 1, ListName.BLACK, entry_kind, v, EntrySource.MANUAL) for i, v in enumerate(entries)]
    t0 = time.perf_counter()
    index = ListIndex.build(rows, version=1)
    build = time.perf_counter() - t0
    records = Records()
    addresses = [ipaddress.IPv4Address(BASE + 7 * i + 1) for i in range(queries)]
    names = []
    for i, ip in enumerate(addresses):
        name = f"mail{i % 50}.corp-{i}.example.org"
        assert match_general(name) is None
        names.append(name)
        records.data[(reverse_name(ip), PTR)] = (name,)
        records.data[(name, 1)] = (str(ip),)
    rdns = ReverseLookup(records, cache_size=queries + 1, cache_bytes=(queries + 1) * 1024)  # type: ignore[arg-type]

    async def prefill() -> None:
        for ip in addresses:
            await rdns.lookup(ip)

    asyncio.run(prefill())
    engine = VerdictEngine(lambda: index, rdns)
    settings = AnswerSettings(nameservers=("ns1.s25rbl.test",), hostmaster="hostmaster.s25rbl.test")
    zones = ZoneTable([(BL, ZoneKind.BLOCKLIST), (HL, ZoneKind.HOSTNAME)])
    responder = Responder(zones, engine, settings, cache_size=0)
    unlisted = [
        packet(f"{ip.reverse_pointer.removesuffix('.in-addr.arpa')}.{BL}", i)
        for i, ip in enumerate(addresses)
    ]
    listed = []
    for i in range(queries):
        zone, rel = listed_probe(kind, entries, (i * 7919) % size)
        listed.append(packet(f"{rel}.{zone}", i))

    def run_handle(packets: list[bytes]) -> Callable[[], None]:
        def go() -> None:
            handle = responder.handle
            for p in packets:
                result = handle(p, False)
                assert isinstance(result, bytes)

        return go

    def run_fast() -> None:
        decide = engine.decide_fast
        for ip in addresses:
            decide(ip)

    def run_name() -> None:
        decide = engine.decide_name
        for name in names:
            decide(name)

    out = {
        "build_s": build,
        "handle": best(run_handle(unlisted), queries),
        "handle_listed": best(run_handle(listed), queries),
        "decide_fast": best(run_fast, queries),
        "decide_name": best(run_name, queries),
    }
    engine.hits.take()
    # Every unlisted question got NXDOMAIN (clean name), every listed one a listing.
    assert responder.counts["blocklist", "nxdomain", "clean"] >= queries
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes 10 and 100, 200 queries (smoke run)")
    parser.add_argument("--sizes", help="comma-separated list sizes (default 10,1000,100000)")
    parser.add_argument("--queries", type=int, help="distinct questions per measurement (default 2,000)")
    args = parser.parse_args()
    sizes = [int(s) for s in (args.sizes or ("10,100" if args.quick else "10,1000,100000")).split(",")]
    queries = args.queries or (200 if args.quick else 2_000)
    print(
        f"µs per call, best of 5 rounds over {queries:,} distinct questions; Python "
        f"{sys.version.split()[0]}; answer cache off",
        flush=True,
    )
    header = f"{'kind':13} {'entries':>8} {'build s':>8} {'handle':>8} {'handle, listed':>15} "
    header += f"{'decide_fast':>12} {'decide_name':>12}"
    print(header)
    flat: dict[str, list[dict[str, float]]] = {}
    for kind in (*KINDS, UNFILED):
        for size in sizes:
            r = measure(kind, size, queries)
            flat.setdefault(kind, []).append(r)
            print(
                f"{kind:13} {size:>8,} {r['build_s']:>8.2f} {r['handle']:>8.2f} {r['handle_listed']:>15.2f} "
                f"{r['decide_fast']:>12.2f} {r['decide_name']:>12.2f}",
                flush=True,
            )
    print(f"\nlargest / smallest list ({sizes[-1]:,} / {sizes[0]:,} entries), per measure:")
    for kind, results in flat.items():
        first, last = results[0], results[-1]
        ratios = ", ".join(
            f"{m} {last[m] / first[m]:.2f}x"
            for m in ("handle", "handle_listed", "decide_fast", "decide_name")
        )
        print(f"  {kind:13} {ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
