"""Compare DNS client libraries on fresh verdict-like lookups (PTR of an address, then A).

Usage: .venv/bin/python bench/resolvers.py [--verdicts 20000] [--inflight 100] [--repeat 1]
Starts a local authoritative server (unbound, else nsd, else dnslib) with TTL 0 records.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import upstream  # bench/upstream.py, next to this file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BASE = ipaddress.IPv4Address("198.18.0.0")  # RFC 2544 benchmarking range
DOMAIN = "bench.test"
RESOLVERS = ("stub", "aiodns", "dnspython")
LOOPS = ("asyncio", "uvloop")
WARMUP = 300


def addresses(count: int) -> list[ipaddress.IPv4Address]:
    return [BASE + 1 + i for i in range(count)]


def host_of(ip: ipaddress.IPv4Address) -> str:
    return "h-" + str(ip).replace(".", "-") + "." + DOMAIN


def pin_to(cpu: int) -> Callable[[], None] | None:
    # On two cores the load generator and the server each get their own core, as in
    # /work/shared/performance.md; on one core nothing is pinned.
    if (os.cpu_count() or 1) < 2:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


# ---------------------------------------------------------------------------------------
# Servers


def start_unbound(workdir: Path, port: int, count: int) -> subprocess.Popen[bytes]:
    lines = [
        "server:",
        "  verbosity: 0",
        f"  interface: 127.0.0.1@{port}",
        f"  port: {port}",
        "  do-ip6: no",
        "  do-daemonize: no",
        '  chroot: ""',
        '  username: ""',
        f'  directory: "{workdir}"',
        '  pidfile: ""',
        "  use-syslog: no",
        '  logfile: ""',
        "  num-threads: 1",
        "  access-control: 127.0.0.0/8 allow",
        '  module-config: "iterator"',
        "  so-rcvbuf: 4m",
        "  so-sndbuf: 4m",
        '  local-zone: "18.198.in-addr.arpa." static',
        '  local-zone: "19.198.in-addr.arpa." static',
        f'  local-zone: "{DOMAIN}." static',
    ]
    for ip in addresses(count):
        name = host_of(ip)
        lines.append(f'  local-data: "{ip.reverse_pointer}. 0 IN PTR {name}."')
        lines.append(f'  local-data: "{name}. 0 IN A {ip}"')
    lines += ["remote-control:", "  control-enable: no"]
    conf = workdir / "unbound.conf"
    conf.write_text("\n".join(lines) + "\n")
    return subprocess.Popen(["/usr/sbin/unbound", "-d", "-c", str(conf)], preexec_fn=pin_to(1))


def start_nsd(workdir: Path, port: int, count: int) -> subprocess.Popen[bytes]:
    soa = "@ 0 IN SOA ns.bench.test. hostmaster.bench.test. 1 3600 600 86400 0\n@ 0 IN NS ns.bench.test.\n"
    zones: dict[str, list[str]] = {
        "18.198.in-addr.arpa": [soa],
        "19.198.in-addr.arpa": [soa],
        DOMAIN: [soa, "ns 0 IN A 127.0.0.1\n"],
    }
    for ip in addresses(count):
        name = host_of(ip)
        rev = ip.reverse_pointer
        zone = "18.198.in-addr.arpa" if rev.endswith("18.198.in-addr.arpa") else "19.198.in-addr.arpa"
        zones[zone].append(f"{rev}. 0 IN PTR {name}.\n")
        zones[DOMAIN].append(f"{name}. 0 IN A {ip}\n")
    conf = [
        "server:",
        f"  port: {port}",
        "  ip-address: 127.0.0.1",
        "  server-count: 1",
        f'  zonesdir: "{workdir}"',
        f'  pidfile: "{workdir}/nsd.pid"',
        f'  xfrdfile: "{workdir}/xfrd.state"',
        f'  zonelistfile: "{workdir}/zone.list"',
        '  database: ""',
        '  username: ""',
        '  chroot: ""',
        "  verbosity: 0",
        "remote-control:",
        "  control-enable: no",
    ]
    for zone, records in zones.items():
        (workdir / f"{zone}.zone").write_text(f"$ORIGIN {zone}.\n" + "".join(records))
        conf += ["zone:", f"  name: {zone}", f"  zonefile: {zone}.zone"]
    path = workdir / "nsd.conf"
    path.write_text("\n".join(conf) + "\n")
    return subprocess.Popen(["/usr/sbin/nsd", "-d", "-c", str(path)], preexec_fn=pin_to(1))


def start_dnslib(workdir: Path, port: int, count: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, __file__, "--dnslib-server", str(port), "--verdicts", str(count)],
        preexec_fn=pin_to(1),
    )


def serve_dnslib(port: int, count: int) -> None:
    """Fallback server: slow (dnslib per packet), so it, not the client, may be the limit."""
    from dnslib import PTR as RD_PTR
    from dnslib import QTYPE, RCODE, RR, DNSRecord
    from dnslib import A as RD_A

    ptrs = {ip.reverse_pointer + ".": host_of(ip) + "." for ip in addresses(count)}
    hosts = {host_of(ip) + ".": str(ip) for ip in addresses(count)}

    class Udp(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: Any = transport

        def datagram_received(self, data: bytes, addr: Any) -> None:
            request = DNSRecord.parse(data)
            reply = request.reply()
            qname = str(request.q.qname).lower()
            if request.q.qtype == QTYPE.PTR and qname in ptrs:
                reply.add_answer(RR(qname, QTYPE.PTR, rdata=RD_PTR(ptrs[qname]), ttl=0))
            elif request.q.qtype == QTYPE.A and qname in hosts:
                reply.add_answer(RR(qname, QTYPE.A, rdata=RD_A(hosts[qname]), ttl=0))
            else:
                reply.header.rcode = RCODE.NXDOMAIN
            self.transport.sendto(reply.pack(), addr)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(Udp, local_addr=("127.0.0.1", port))
        await asyncio.Event().wait()

    asyncio.run(main())


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Until the server answers the PTR of the first generated address."""
    upstream.wait_answer(port, proc, addresses(1)[0].reverse_pointer, 12, timeout)


# ---------------------------------------------------------------------------------------
# Clients (run in a child process each, so runs do not share caches, GC state or the loop)

Lookup = Callable[[str], Awaitable[list[str]]]


async def make_clients(kind: str, port: int) -> tuple[Lookup, Lookup, Callable[[], Awaitable[None]]]:
    if kind == "stub":
        from s25rbl.resolve.client import StubResolver
        from s25rbl.resolve.codec import PTR, A, LookupStatus

        stub = StubResolver([("127.0.0.1", port)], timeout=1.0, attempts=2)

        async def stub_ptr(name: str) -> list[str]:
            result = await stub.lookup(name, PTR)
            return list(result.values) if result.status is LookupStatus.OK else []

        async def stub_a(name: str) -> list[str]:
            result = await stub.lookup(name, A)
            return list(result.values) if result.status is LookupStatus.OK else []

        return stub_ptr, stub_a, stub.close

    if kind == "aiodns":
        import aiodns

        # pycares 5 takes "host:port" server strings (ares_set_servers_ports_csv).
        res = aiodns.DNSResolver(nameservers=[f"127.0.0.1:{port}"], timeout=1.0, tries=2)

        async def cares_ptr(name: str) -> list[str]:
            try:
                result = await res.query_dns(name, "PTR")
            except aiodns.error.DNSError:
                return []
            return [r.data.dname.lower().rstrip(".") for r in result.answer if r.type == 12]

        async def cares_a(name: str) -> list[str]:
            try:
                result = await res.query_dns(name, "A")
            except aiodns.error.DNSError:
                return []
            return [r.data.addr for r in result.answer if r.type == 1]

        return cares_ptr, cares_a, res.close

    import dns.asyncresolver
    import dns.exception
    import dns.rdatatype

    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = port
    resolver.cache = None  # no client cache: every lookup is fresh
    resolver.timeout = 1.0
    resolver.lifetime = 2.0

    async def py_ptr(name: str) -> list[str]:
        try:
            answer = await resolver.resolve(name, "PTR", search=False, raise_on_no_answer=False)
        except dns.exception.DNSException:
            return []
        return [r.target.to_text(omit_final_dot=True).lower() for r in answer]

    async def py_a(name: str) -> list[str]:
        try:
            answer = await resolver.resolve(name, "A", search=False, raise_on_no_answer=False)
        except dns.exception.DNSException:
            return []
        return [r.address for r in answer]

    async def py_close() -> None:
        return None

    return py_ptr, py_a, py_close


async def measure(kind: str, port: int, count: int, inflight: int, max_seconds: float) -> dict[str, Any]:
    ptr, a, close = await make_clients(kind, port)
    ips = addresses(count)
    rev = [ip.reverse_pointer for ip in ips]
    text = [str(ip) for ip in ips]

    # Warm-up: sockets, imports and first-use paths are not what is being compared.
    for i in range(min(WARMUP, count)):
        await ptr(rev[i])

    latencies: list[float] = []
    lookups = 0
    confirmed = 0
    nxt = 0
    perf = time.perf_counter
    stop_at = perf() + max_seconds

    async def worker() -> None:
        nonlocal nxt, lookups, confirmed
        while nxt < count and perf() < stop_at:
            i = nxt
            nxt += 1
            start = perf()
            names = await ptr(rev[i])
            lookups += 1
            if names:
                addrs = await a(names[0])
                lookups += 1
                if text[i] in addrs:
                    confirmed += 1
            latencies.append(perf() - start)

    cpu0 = time.process_time()
    wall0 = perf()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    wall = perf() - wall0
    cpu = time.process_time() - cpu0
    await close()
    latencies.sort()
    done = len(latencies)
    return {
        "verdicts": done,
        "confirmed": confirmed,
        "lookups": lookups,
        "wall": wall,
        "lookups_s": lookups / wall,
        "verdicts_s": done / wall,
        "cpu_us": cpu / done * 1e6,
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": latencies[min(done - 1, int(done * 0.99))] * 1e3,
    }


def child(kind: str, loop: str, port: int, count: int, inflight: int, max_seconds: float) -> None:
    pin = pin_to(0)
    if pin is not None:
        pin()
    if loop == "uvloop":
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    else:
        factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        result = runner.run(measure(kind, port, count, inflight, max_seconds))
    print(json.dumps(result))


# ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verdicts", type=int, default=20000)
    parser.add_argument("--inflight", type=int, default=100)
    parser.add_argument("--max-seconds", type=float, default=30.0)
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell; the median is shown")
    parser.add_argument("--server", choices=("auto", "unbound", "nsd", "dnslib"), default="auto")
    parser.add_argument("--resolvers", default=",".join(RESOLVERS))
    parser.add_argument("--loops", default=",".join(LOOPS))
    parser.add_argument("--child", nargs=3, metavar=("RESOLVER", "LOOP", "PORT"))
    parser.add_argument("--dnslib-server", type=int, metavar="PORT")
    args = parser.parse_args()

    if args.dnslib_server:
        serve_dnslib(args.dnslib_server, args.verdicts)
        return
    if args.child:
        kind, loop, port = args.child
        child(kind, loop, int(port), args.verdicts, args.inflight, args.max_seconds)
        return

    server = args.server
    if server == "auto":
        server = next((s for s in ("unbound", "nsd") if Path(f"/usr/sbin/{s}").exists()), "dnslib")
    starters = {"unbound": start_unbound, "nsd": start_nsd, "dnslib": start_dnslib}
    port = upstream.free_port()
    with tempfile.TemporaryDirectory(prefix="s25rbl-bench-") as tmp:
        proc = starters[server](Path(tmp), port, args.verdicts)
        try:
            wait_ready(port, proc)
            print(
                f"server: {server} on 127.0.0.1:{port}, {args.verdicts} PTR+A records, TTL 0; "
                f"{args.verdicts} verdicts per run, {args.inflight} in flight, "
                f"cap {args.max_seconds:g} s; cpus: {os.cpu_count()}"
                + ("; client pinned to cpu 0, server to cpu 1" if pin_to(0) else ""),
                flush=True,
            )
            rows = []
            for kind in args.resolvers.split(","):
                for loop in args.loops.split(","):
                    runs = []
                    for _ in range(args.repeat):
                        out = subprocess.run(
                            [
                                sys.executable,
                                __file__,
                                "--child",
                                kind,
                                loop,
                                str(port),
                                "--verdicts",
                                str(args.verdicts),
                                "--inflight",
                                str(args.inflight),
                                "--max-seconds",
                                str(args.max_seconds),
                            ],
                            check=True,
                            capture_output=True,
                            text=True,
                        )
                        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
                    runs.sort(key=lambda r: r["verdicts_s"])
                    row = runs[len(runs) // 2]
                    rows.append((kind, loop, row))
                    print(f"  done {kind}/{loop}: {row['verdicts_s']:.0f} verdicts/s", flush=True)
        finally:
            proc.terminate()
            proc.wait(10)

    header = (
        "| resolver | loop | lookups/s | verdicts/s | client CPU µs/verdict | p50 ms | p99 ms "
        "| verdicts done (confirmed) |"
    )
    print()
    print(header)
    print("|" + "---|" * 8)
    for kind, loop, r in rows:
        print(
            f"| {kind} | {loop} | {r['lookups_s']:,.0f} | {r['verdicts_s']:,.0f} "
            f"| {r['cpu_us']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
            f"| {r['verdicts']} ({r['confirmed']}) |"
        )


if __name__ == "__main__":
    main()
