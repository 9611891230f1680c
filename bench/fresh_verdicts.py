"""Fresh-verdict throughput of the real ``s25rbl serve``: every query a new address, no cache.

Usage: .venv/bin/python bench/fresh_verdicts.py [--quick] [--inflight-sweep] [--addresses N]

Generates N distinct addresses in 100.64.0.0/10 (~50 % dynamic-looking PTR names that hit
an S25R rule, ~40 % clean mail-server names, ~10 % without PTR; every PTR name has its A
record; TTL 0 everywhere), serves them from a loopback unbound, starts ``s25rbl serve`` on a
temporary SQLite store with that unbound as its only upstream, and runs

    dnsperf -s 127.0.0.1 -p PORT -d queries.txt -c 10 -q Q -l 20 -n 1 -v

against it: one pass over the file, every line a different address, so every answer is a
fresh verdict (PTR lookup, then A lookup of the name). A small open-loop sampler sends a few
more queries meanwhile and reads the A records (code .2 / .4 / .5 / NXDOMAIN). CPU time of
s25rbl and unbound comes from /proc/PID/stat. The addresses are only names in DNS data served
on 127.0.0.1; nothing is ever sent to them.

Layout on two cores (``--layout``): ``own-core`` (default) pins s25rbl alone to cpu 0, and
unbound, dnsperf and this script (the sampler) to cpu 1; ``shared-core`` pins s25rbl and
unbound to cpu 1, dnsperf and this script to cpu 0.

This is a benchmark, not a test: numbers vary with the machine and its other load.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import random
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import upstream  # noqa: E402  (bench/upstream.py, next to this file)

from s25rbl.verdict.s25r import match_general  # noqa: E402

NETWORK = ipaddress.IPv4Network("100.64.0.0/10")  # RFC 6598 shared space: never routed here
ZONE = "bl.s25rbl.test"
DYNAMIC, CLEAN, NO_PTR = "dynamic", "clean", "no-ptr"
# Expected answer per kind when nothing fails: A code, or None for NXDOMAIN.
EXPECTED: dict[str, int | None] = {DYNAMIC: 2, CLEAN: None, NO_PTR: 4}
PREFECTURES = ("tokyo", "osaka", "kanagawa", "aichi", "fukuoka", "hokkaido", "kyoto", "hyogo")
DNSPERF_CLIENTS = 10
SAMPLE_RATE = 200  # sampler queries per second, open loop
SAMPLER_TIMEOUT = 5.0  # dnsperf's default -t
WARMUP = 200


# ---------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True, slots=True)
class Host:
    ip: ipaddress.IPv4Address
    kind: str
    name: str | None

    @property
    def query(self) -> str:
        return f"{self.ip.reverse_pointer.removesuffix('.in-addr.arpa')}.{ZONE}"


def dynamic_name(ip: ipaddress.IPv4Address, i: int) -> str:
    a, b, c, d = ip.packed
    pref = PREFECTURES[i % len(PREFECTURES)]
    style = i % 7
    if style == 0:
        return f"p{c * 256 + d}-ipad{b:02d}{pref}.{pref}.example.ne.jp"
    if style == 1:
        return f"{d}-{c}-{b}-{a}.dyn.example-isp.net"
    if style == 2:
        return f"dhcp-{a}-{b}-{c}-{d}.pool.example.com"
    if style == 3:
        return f"ppp{b:03d}{c:03d}{d:03d}.example-dsl.de"
    if style == 4:
        return f"ip{d}.{c}.{b}.{a}.example-cable.at"
    if style == 5:
        return f"{d}.{c}.{b}.{a}.broadband.example.ru"
    return f"softbank{a:03d}{b:03d}{c:03d}{d:03d}.bbtec.example.jp"


def clean_name(i: int) -> str:
    style = i % 4
    if style == 0:
        return f"mx{i % 20 + 1}.example-{i}.org"
    if style == 1:
        return f"mail.corp-{i}.example.com"
    if style == 2:
        return f"smtp-out.mailer-{i}.net"
    return f"mta{i % 9 + 1}.example-{i}.co.jp"


def generate(count: int, seed: int) -> list[Host]:
    rng = random.Random(seed)
    base = int(NETWORK.network_address)
    # Skip .0 and .255 host numbers only for looks; all are distinct.
    offsets = rng.sample(range(1, NETWORK.num_addresses - 1), count)
    hosts: list[Host] = []
    for i, offset in enumerate(offsets):
        ip = ipaddress.IPv4Address(base + offset)
        roll = rng.random()
        if roll < 0.5:
            name = dynamic_name(ip, i)
            if match_general(name) is None:
                raise AssertionError(f"generated dynamic name {name} hits no S25R rule")
            hosts.append(Host(ip, DYNAMIC, name))
        elif roll < 0.9:
            name = clean_name(i)
            if match_general(name) is not None:
                raise AssertionError(f"generated clean name {name} hits an S25R rule")
            hosts.append(Host(ip, CLEAN, name))
        else:
            hosts.append(Host(ip, NO_PTR, None))
    return hosts


def unbound_records(hosts: list[Host]) -> tuple[list[str], list[str]]:
    zones = sorted({".".join(h.ip.reverse_pointer.split(".")[2:]) for h in hosts})
    records: list[str] = []
    for h in hosts:
        if h.name is not None:
            records.append(f"{h.ip.reverse_pointer}. 0 IN PTR {h.name}.")
            records.append(f"{h.name}. 0 IN A {h.ip}")
    return zones, records


# ---------------------------------------------------------------------------------------
# The server under test


@dataclass
class Server:
    proc: subprocess.Popen[str]
    port: int
    output: list[str] = field(default_factory=list)


def write_config(
    path: Path,
    upstream_port: int,
    db: Path,
    *,
    deadline: float = 1.5,
    max_inflight: int = 512,
    rdns_cache: int = 200_000,
    port: int = 0,
    extra: str = "",
) -> None:
    """The configuration of the server under test (every benchmark's); ``extra`` goes in [dns].
    ``rdns_cache``: reverse-lookup results to have room for (1 KiB each, more than any takes)."""
    path.write_text(
        f"""
[dns]
listen = ["127.0.0.1:{port}"]
zone = "{ZONE}"
whitelist_zone = "wl.s25rbl.test"
nameservers = ["ns1.s25rbl.test"]
hostmaster = "hostmaster.s25rbl.test"
{extra}

[resolver]
upstreams = ["127.0.0.1:{upstream_port}"]
timeout = {deadline}
max_inflight = {max_inflight}
cache_bytes = {rdns_cache * 1024}

[database]
url = "sqlite:///{db}"

[api]
listen = "127.0.0.1:0"

[lists]
builtin_whitelist = false

[policy]
listen = ""

[log]
level = "warning"
"""
    )


def start_server(config: Path, cpu: int, profile: Path | None = None, timeout: float = 60.0) -> Server:
    env = {k: v for k, v in os.environ.items() if not k.startswith("S25RBL_")}
    env["PYTHONUNBUFFERED"] = "1"
    prof = ["-m", "cProfile", "-o", str(profile)] if profile is not None else []
    proc = subprocess.Popen(
        upstream.taskset(cpu, [sys.executable, *prof, "-m", "s25rbl", "--config", str(config), "serve"]),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    server = Server(proc, 0)
    assert proc.stdout is not None
    found = threading.Event()

    def pump() -> None:  # keeps reading so the child never blocks on a full pipe
        assert proc.stdout is not None
        for line in proc.stdout:
            server.output.append(line)
            match = re.search(r"serving DNS \(udp\+tcp\) on 127\.0\.0\.1:(\d+)", line)
            if match:
                server.port = int(match.group(1))
                found.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not found.wait(0.1):
        if proc.poll() is not None or time.monotonic() > deadline:
            upstream.stop(proc)
            raise RuntimeError("s25rbl did not start:\n" + "".join(server.output))
    return server


# ---------------------------------------------------------------------------------------
# Load: dnsperf plus an open-loop sampler that reads the answer codes


@dataclass
class Sample:
    sent: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    mismatched: int = 0  # answers that are neither the expected one nor code .5


def parse_answer(data: bytes, qlen: int) -> str:
    """'NX', '.N' for an A answer 127.0.0.N, or 'rcode R'."""
    rcode = data[3] & 0x0F
    if rcode == 3:
        return "NX"
    if rcode != 0:
        return f"rcode {rcode}"
    ancount = int.from_bytes(data[6:8], "big")
    pos = qlen  # the question is echoed byte for byte
    for _ in range(ancount):
        while True:  # owner name: labels, or a compression pointer
            length = data[pos]
            if length >= 0xC0:
                pos += 2
                break
            pos += 1 + length
            if length == 0:
                break
        rtype = int.from_bytes(data[pos : pos + 2], "big")
        rdlen = int.from_bytes(data[pos + 8 : pos + 10], "big")
        if rtype == 1 and rdlen == 4:
            return f".{data[pos + 13]}"
        pos += 10 + rdlen
    return "NODATA"


class SamplerProtocol(asyncio.DatagramProtocol):
    def __init__(self, sample: Sample, pending: dict[int, tuple[float, int, Host]]) -> None:
        self.sample = sample
        self.pending = pending
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        now = time.perf_counter()
        item = self.pending.pop(int.from_bytes(data[:2], "big"), None)
        if item is None:
            return
        sent_at, qlen, host = item
        self.sample.latencies.append(now - sent_at)
        code = parse_answer(data, qlen)
        self.sample.codes[code] += 1
        expected = EXPECTED[host.kind]
        if code != ".5" and code != ("NX" if expected is None else f".{expected}"):
            self.sample.mismatched += 1


async def ask_all(port: int, hosts: list[Host], rate: float, stop: asyncio.Event) -> Sample:
    """Send one query per host at ``rate``/s (open loop) until done or ``stop``; wait answers."""
    loop = asyncio.get_running_loop()
    sample = Sample()
    pending: dict[int, tuple[float, int, Host]] = {}
    transport, _ = await loop.create_datagram_endpoint(
        lambda: SamplerProtocol(sample, pending), remote_addr=("127.0.0.1", port)
    )
    try:
        start = time.perf_counter()
        for i, host in enumerate(hosts):
            if stop.is_set():
                break
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                    break
                except TimeoutError:
                    pass
            qid = i & 0xFFFF
            packet = upstream.query_packet(qid, host.query, 1)
            pending[qid] = (time.perf_counter(), len(packet), host)
            transport.sendto(packet)
            sample.sent += 1
        end = time.perf_counter() + SAMPLER_TIMEOUT
        while pending and time.perf_counter() < end:
            await asyncio.sleep(0.02)
    finally:
        transport.close()
    return sample


@dataclass
class RunResult:
    inflight: int
    stats: dict[str, float] = field(default_factory=dict)
    rcodes: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # every completed dnsperf query
    expected: Counter[str] = field(default_factory=Counter)
    clean_noerror: int = 0  # clean addresses (expected NXDOMAIN) answered NOERROR: code .5
    clean_answered: int = 0
    sample: Sample = field(default_factory=Sample)
    wall: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    steal: tuple[float, ...] = (0.0, 0.0)  # share of the window the host took s25rbl's / the other core
    raw: str = ""


STAT_PATTERNS = {
    "sent": r"Queries sent:\s+(\d+)",
    "completed": r"Queries completed:\s+(\d+)",
    "lost": r"Queries lost:\s+(\d+)",
    "run_time": r"Run time \(s\):\s+([\d.]+)",
    "qps": r"Queries per second:\s+([\d.]+)",
    "avg": r"Average Latency \(s\):\s+([\d.]+)",
    "min": r"Average Latency \(s\):\s+[\d.]+ \(min ([\d.]+)",
    "max": r"Average Latency \(s\):.*max ([\d.]+)\)",
    "stddev": r"Latency StdDev \(s\):\s+([\d.]+)",
}


def parse_dnsperf(out: str, by_query: dict[str, Host], result: RunResult) -> None:
    for key, pattern in STAT_PATTERNS.items():
        match = re.search(pattern, out)
        if match:
            result.stats[key] = float(match.group(1))
    match = re.search(r"Response codes:\s+(.*)", out)
    if match:
        for part in match.group(1).split(","):
            bits = part.split()
            if len(bits) >= 2:
                result.rcodes[bits[0]] = int(bits[1])
    for line in out.splitlines():
        if not line.startswith("> "):
            continue
        bits = line.split()
        if len(bits) < 5:
            continue
        rcode, qname = bits[1], bits[2]
        host = by_query.get(qname.lower().rstrip("."))
        try:
            result.latencies.append(float(bits[-1]))
        except ValueError:
            continue
        if host is None:
            continue
        if host.kind == CLEAN:
            result.clean_answered += 1
            if rcode == "NOERROR":
                result.clean_noerror += 1


async def load_run(
    *,
    server: Server,
    unbound_pid: int,
    queries: Path,
    by_query: dict[str, Host],
    dnsperf_hosts: list[Host],
    sample_hosts: list[Host],
    inflight: int,
    duration: float,
    load_cpu: int,
    server_cpu: int,
) -> RunResult:
    result = RunResult(inflight)
    stop = asyncio.Event()
    cmd = upstream.taskset(
        load_cpu,
        [
            "dnsperf", "-s", "127.0.0.1", "-p", str(server.port), "-d", str(queries),
            "-c", str(DNSPERF_CLIENTS), "-q", str(inflight), "-l", f"{duration:g}", "-n", "1",
            "-v",
        ],
    )  # fmt: skip
    usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    s0, u0, c0 = upstream.cpu_seconds(server.proc.pid), upstream.cpu_seconds(unbound_pid), time.process_time()
    steal = upstream.StealMeter(server_cpu, load_cpu)
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True
    )
    sampler = asyncio.create_task(ask_all(server.port, sample_hosts, SAMPLE_RATE, stop))
    try:
        # The CPU window ends when dnsperf stops sending (its -l limit, or the end of its
        # input): the wait for answers to lost queries after that would only dilute it.
        communicate = asyncio.ensure_future(proc.communicate())
        await asyncio.wait({communicate}, timeout=duration)
        t1 = time.monotonic()
        s1, u1 = upstream.cpu_seconds(server.proc.pid), upstream.cpu_seconds(unbound_pid)
        result.steal = steal.shares(t1 - t0)
        stop.set()
        stdout, _ = await communicate
        result.sample = await sampler
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        sampler.cancel()
    usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    result.wall = t1 - t0
    result.cpu = {
        "s25rbl": s1 - s0,
        "unbound": u1 - u0,
        # dnsperf as a whole (its tail included), and this script's sampler.
        "dnsperf": (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime),
        "sampler": time.process_time() - c0,
    }
    out = stdout.decode(errors="replace")
    result.raw = "\n".join(line for line in out.splitlines() if not line.startswith("> "))
    parse_dnsperf(out, by_query, result)
    sent = int(result.stats.get("sent", 0))
    # dnsperf reads its input in order, so the queries sent are the first `sent` lines.
    result.expected = Counter(h.kind for h in dnsperf_hosts[:sent])
    return result


# ---------------------------------------------------------------------------------------
# Report


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


def report_run(r: RunResult, layout: dict[str, int]) -> None:
    st = r.stats
    sent, completed, lost = int(st.get("sent", 0)), int(st.get("completed", 0)), int(st.get("lost", 0))
    print(f"\n== dnsperf -q {r.inflight} ==")
    print(f"  dnsperf: {sent} sent, {completed} completed, {lost} lost ({lost / max(sent, 1):.2%}), "
          f"run time {st.get('run_time', 0):.2f} s, {st.get('qps', 0):,.0f} queries/s")  # fmt: skip
    print(f"  dnsperf latency: avg {ms(st.get('avg', 0))}, min {ms(st.get('min', 0))}, "
          f"max {ms(st.get('max', 0))}, stddev {ms(st.get('stddev', 0))}")  # fmt: skip
    lat = r.latencies
    if lat:
        print(f"  latency of all {len(lat)} completed queries (dnsperf -v): p50 {ms(pct(lat, 0.5))}, "
              f"p90 {ms(pct(lat, 0.9))}, p99 {ms(pct(lat, 0.99))}, p99.9 {ms(pct(lat, 0.999))}")  # fmt: skip
    print("  response codes: " + ", ".join(f"{k} {v}" for k, v in sorted(r.rcodes.items())))
    exp = r.expected
    print(f"  expected for the {sent} queries sent, if nothing failed: .2 (S25R) {exp[DYNAMIC]}, "
          f".4 (no PTR) {exp[NO_PTR]}, NXDOMAIN (clean) {exp[CLEAN]}")  # fmt: skip
    if r.clean_answered:
        print(f"  clean addresses answered NOERROR, i.e. code .5: {r.clean_noerror} of "
              f"{r.clean_answered} ({r.clean_noerror / r.clean_answered:.2%})")  # fmt: skip
    s = r.sample
    answered = sum(s.codes.values())
    codes = ", ".join(f"{k} {v}" for k, v in sorted(s.codes.items()))
    print(f"  sampler ({SAMPLE_RATE}/s alongside, A record read): {s.sent} sent, {answered} answered "
          f"({codes or '-'}), {s.sent - answered} lost, {s.mismatched} unexpected")  # fmt: skip
    if s.latencies:
        print(f"  sampler latency: p50 {ms(pct(s.latencies, 0.5))}, p99 {ms(pct(s.latencies, 0.99))}, "
              f"max {ms(max(s.latencies))}")  # fmt: skip
        if answered:
            print(f"  code .5 rate in the sample: {s.codes['.5'] / answered:.2%}")
    w = max(r.wall, 1e-9)
    per = max(completed, 1)
    print(f"  CPU while dnsperf was sending ({r.wall:.2f} s): "
          f"s25rbl {r.cpu['s25rbl'] / w:.0%} of a core (cpu {layout['server']}, "
          f"{r.cpu['s25rbl'] / per * 1e6:.0f} µs/verdict), "
          f"unbound {r.cpu['unbound'] / w:.0%} (cpu {layout['unbound']}, "
          f"{r.cpu['unbound'] / per * 1e6:.0f} µs per query, i.e. per PTR+A pair); "
          f"steal {r.steal[0]:.1%} / {r.steal[1]:.1%} of cpu {layout['server']} / "
          f"cpu {layout['load']} (the host's use of the cores: figures from a run with steal "
          f"are not the server's)")  # fmt: skip
    print(f"  load side (cpu {layout['load']}, whole dnsperf run incl. startup/tail): "
          f"dnsperf {r.cpu['dnsperf']:.2f} s CPU, sampler {r.cpu['sampler']:.2f} s CPU")  # fmt: skip
    if r.cpu["unbound"] > 0 and r.cpu["s25rbl"] > 0:
        ratio = r.cpu["s25rbl"] / r.cpu["unbound"]
        print(f"  s25rbl spends {ratio:.1f}x the CPU of unbound per verdict; by CPU, unbound "
              f"would run out of its core at ~{per / r.cpu['unbound'] / 1e3:,.0f}k verdicts/s")  # fmt: skip


# ---------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 addresses, 3 s (smoke run)")
    parser.add_argument("--addresses", type=int, help="distinct addresses (default 200,000)")
    parser.add_argument("--duration", type=float, help="dnsperf -l seconds (default 20)")
    parser.add_argument("--inflight", type=int, default=100, help="dnsperf -q (default 100)")
    parser.add_argument("--inflight-sweep", action="store_true", help="run -q 50, 100 and 200")
    parser.add_argument("--deadline", type=float, default=1.5, help="[resolver] timeout (s)")
    parser.add_argument("--max-inflight", type=int, default=512, help="[resolver] max_inflight")
    parser.add_argument("--layout", choices=("own-core", "shared-core"), default="own-core")
    parser.add_argument("--seed", type=int, default=25)
    parser.add_argument("--show-dnsperf", action="store_true", help="print dnsperf's own output")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run s25rbl under cProfile (slower) and print its top functions",
    )
    args = parser.parse_args()
    count = args.addresses or (2_000 if args.quick else 200_000)
    duration = args.duration or (3.0 if args.quick else 20.0)
    inflights = [50, 100, 200] if args.inflight_sweep else [args.inflight]

    two = (os.cpu_count() or 1) >= 2
    if args.layout == "own-core":
        layout = {"server": 0, "unbound": 1, "load": 1}
    else:
        layout = {"server": 1, "unbound": 1, "load": 0}
    if two:
        os.sched_setaffinity(0, {layout["load"]})  # the sampler runs in this process

    # SIGTERM takes the same clean-up path as Ctrl-C.
    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)

    t_gen = time.monotonic()
    hosts = generate(count, args.seed)
    # The sampler's addresses are kept out of dnsperf's file; a server restart per run keeps
    # runs independent (and with TTL 0 nothing would be cached across them anyway).
    n_sample = min(int(SAMPLE_RATE * duration) + 1, max(1, count // 10))
    n_warm = min(WARMUP, max(1, count // 20))
    sample_hosts = hosts[-n_sample:]
    warm_hosts = hosts[-n_sample - n_warm : -n_sample]
    dnsperf_hosts = hosts[: count - n_sample - n_warm]
    kinds = Counter(h.kind for h in hosts)
    by_query = {h.query: h for h in dnsperf_hosts}

    unbound: subprocess.Popen[bytes] | None = None
    server: Server | None = None
    with tempfile.TemporaryDirectory(prefix="s25rbl-fresh-") as tmp:
        work = Path(tmp)
        try:
            queries = work / "queries.txt"
            queries.write_text("".join(f"{h.query} A\n" for h in dnsperf_hosts))
            zones, records = unbound_records(hosts)
            uport = upstream.free_port()
            conf = upstream.write_unbound_conf(work, uport, zones, records)
            gen_s = time.monotonic() - t_gen
            t_ub = time.monotonic()
            unbound = upstream.start_unbound(
                conf, layout["unbound"] if two else None, log=work / "unbound.log"
            )
            probe = next(h for h in hosts if h.name is not None)
            upstream.wait_answer(uport, unbound, probe.ip.reverse_pointer, 12, timeout=300)
            print(
                f"fresh verdicts: {count} addresses in {NETWORK} ({kinds[DYNAMIC]} dynamic PTR, "
                f"{kinds[CLEAN]} clean PTR, {kinds[NO_PTR]} no PTR), every PTR name with its A, "
                f"TTL 0; {len(records)} records generated in {gen_s:.1f} s, unbound ready in "
                f"{time.monotonic() - t_ub:.1f} s",
                flush=True,
            )
            print(
                f"layout ({args.layout}): s25rbl on cpu {layout['server']}, unbound on cpu "
                f"{layout['unbound']}, dnsperf + sampler on cpu {layout['load']}"
                + ("" if two else " (one cpu: nothing pinned)")
                + f"; s25rbl [resolver] timeout (verdict deadline) {args.deadline:g} s, "
                f"max_inflight {args.max_inflight}; dnsperf file {len(dnsperf_hosts)} queries, "
                f"-c {DNSPERF_CLIENTS} -l {duration:g} -n 1; sampler {len(sample_hosts)} "
                f"addresses at {SAMPLE_RATE}/s",
                flush=True,
            )
            results: list[RunResult] = []
            for q in inflights:
                db = work / f"s25rbl-q{q}.sqlite"
                config = work / f"s25rbl-q{q}.toml"
                write_config(config, uport, db, deadline=args.deadline, max_inflight=args.max_inflight)
                profile = work / f"s25rbl-q{q}.prof" if args.profile else None
                server = start_server(config, layout["server"] if two else 0, profile)
                # Warm-up: imports, sockets to the upstream, first-use paths; then settle.
                warm = asyncio.run(ask_all(server.port, warm_hosts, 1000, asyncio.Event()))
                if sum(warm.codes.values()) < len(warm_hosts) * 0.9:
                    raise RuntimeError(f"warm-up mostly unanswered: {warm.codes}")
                time.sleep(0.5)
                result = asyncio.run(
                    load_run(
                        server=server,
                        unbound_pid=unbound.pid,
                        queries=queries,
                        by_query=by_query,
                        dnsperf_hosts=dnsperf_hosts,
                        sample_hosts=sample_hosts,
                        inflight=q,
                        duration=duration,
                        load_cpu=layout["load"] if two else 0,
                        server_cpu=layout["server"] if two else 0,
                    )
                )
                upstream.stop(server.proc)
                if server.proc.returncode not in (0, -signal.SIGTERM):
                    print(f"  (s25rbl exited with {server.proc.returncode})")
                server = None
                results.append(result)
                if profile is not None and profile.exists():
                    import pstats

                    print(f"\n-- cProfile of s25rbl, -q {q} (profiling itself slows it down) --")
                    pstats.Stats(str(profile)).sort_stats("tottime").print_stats(25)
                if args.show_dnsperf:
                    print(result.raw)
                report_run(result, layout)
                sys.stdout.flush()
            if len(results) > 1:
                print("\n| dnsperf -q | queries/s | lost | avg ms | p50 ms | p99 ms | max ms "
                      "| .5 among clean | s25rbl core | unbound core |")  # fmt: skip
                print("|---|---|---|---|---|---|---|---|---|---|")
                for r in results:
                    st, w = r.stats, max(r.wall, 1e-9)
                    share5 = r.clean_noerror / r.clean_answered if r.clean_answered else 0.0
                    print(
                        f"| {r.inflight} | {st.get('qps', 0):,.0f} | {int(st.get('lost', 0))} "
                        f"| {st.get('avg', 0) * 1e3:.1f} | {pct(r.latencies, 0.5) * 1e3:.1f} "
                        f"| {pct(r.latencies, 0.99) * 1e3:.1f} | {st.get('max', 0) * 1e3:.1f} "
                        f"| {share5:.2%} | {r.cpu['s25rbl'] / w:.0%} | {r.cpu['unbound'] / w:.0%} |"
                    )
                best = max(results, key=lambda r: r.stats.get("qps", 0))
                print(f"\nbest: -q {best.inflight}, {best.stats.get('qps', 0):,.0f} queries/s")
        except KeyboardInterrupt:
            print("\ninterrupted; cleaning up", file=sys.stderr)
            return 130
        finally:
            if server is not None:
                upstream.stop(server.proc)
            upstream.stop(unbound)
    return 0


if __name__ == "__main__":
    sys.exit(main())
