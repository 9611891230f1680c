"""Shared helpers of the cached-answer benchmarks: data, s25rbl and rbldnsd processes, dnsperf.

Processes are started in their own session, pinned with ``taskset`` and stopped by pid
(``upstream.stop``), the same way as ``fresh_verdicts.py`` and ``upstream.py`` do it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

import upstream  # noqa: E402  (bench/upstream.py)
from fresh_verdicts import (  # noqa: E402
    STAT_PATTERNS,
    Server,
    clean_name,
    parse_answer,
    start_server,
    write_config,
)

from s25rbl.verdict.s25r import match_general  # noqa: E402

__all__ = ["Server", "parse_answer", "start_server", "upstream"]

ZONE = "bl.s25rbl.test"
NETWORK = ipaddress.IPv4Network("100.64.0.0/10")  # RFC 6598: only ever names in local DNS data
RBLDNSD = "/usr/sbin/rbldnsd"
TWO_CPUS = (os.cpu_count() or 1) >= 2
SERVER_CPU, LOAD_CPU = (1, 0) if TWO_CPUS else (None, None)


def query_name(ip: ipaddress.IPv4Address) -> str:
    return f"{ip.reverse_pointer.removesuffix('.in-addr.arpa')}.{ZONE}"


@dataclass
class Data:
    listed: list[ipaddress.IPv4Address]
    clean: list[tuple[ipaddress.IPv4Address, str]]  # unlisted, with a forward-confirmed clean PTR
    queries: list[tuple[str, str]]  # (name, type)


def generate(listed: int, clean: int, queries: int, seed: int = 25, txt_share: float = 0.1) -> Data:
    """``listed`` + ``clean`` distinct addresses; ``queries`` questions over them in random
    order, half on listed addresses, half on clean ones; ``txt_share`` of them TXT, the rest A."""
    rng = random.Random(seed)
    base = int(NETWORK.network_address)
    offsets = rng.sample(range(1, NETWORK.num_addresses - 1), listed + clean)
    ips = [ipaddress.IPv4Address(base + o) for o in offsets]
    black = ips[:listed]
    white: list[tuple[ipaddress.IPv4Address, str]] = []
    for i, ip in enumerate(ips[listed:]):
        name = clean_name(i)
        if match_general(name) is not None:
            raise AssertionError(f"generated clean name {name} hits an S25R rule")
        white.append((ip, name))
    half = queries // 2
    addresses = [black[i % listed] for i in range(half)]
    addresses += [white[i % len(white)][0] if white else black[i % listed] for i in range(queries - half)]
    asked = [(query_name(ip), "TXT" if rng.random() < txt_share else "A") for ip in addresses]
    rng.shuffle(asked)
    return Data(black, white, asked)


def write_inputs(work: Path, data: Data) -> tuple[Path, Path]:
    """The blacklist as plain IP lines (for ``s25rbl import``) and the dnsperf query file."""
    black = work / "black.txt"
    black.write_text("".join(f"{ip}\n" for ip in data.listed))
    queries = work / "queries.txt"
    queries.write_text("".join(f"{name} {qtype}\n" for name, qtype in data.queries))
    return black, queries


def unbound_for(work: Path, data: Data, ttl: int = 3600, cpu: int | None = None) -> tuple[int, object]:
    """A loopback unbound serving PTR + A (``ttl``) of every clean address; (port, process)."""
    zones = sorted({".".join(ip.reverse_pointer.split(".")[2:]) for ip, _ in data.clean})
    records: list[str] = []
    for ip, name in data.clean:
        records.append(f"{ip.reverse_pointer}. {ttl} IN PTR {name}.")
        records.append(f"{name}. {ttl} IN A {ip}")
    port = upstream.free_port()
    conf = upstream.write_unbound_conf(work, port, zones, records)
    proc = upstream.start_unbound(conf, cpu, log=work / "unbound.log")
    if data.clean:
        upstream.wait_answer(port, proc, data.clean[0][0].reverse_pointer, 12, timeout=300)
    return port, proc


def s25rbl_cli(config: Path, *args: str, timeout: float = 600) -> str:
    """Run ``s25rbl --config CONFIG ARGS``; its standard output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("S25RBL_")}
    done = subprocess.run(
        [sys.executable, "-m", "s25rbl", "--config", str(config), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"s25rbl {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def rbldnsd_dataset(work: Path, exported: str) -> Path:
    """The rbldnsd ip4set from ``s25rbl export --format rbldnsd``, with the SOA and NS s25rbl
    answers with, so that both servers give the same answers (NXDOMAIN carries the SOA)."""
    path = work / "rbldnsd" / "black.ip4set"
    path.parent.mkdir(mode=0o755, exist_ok=True)
    soa = f"$SOA 300 ns1.{ZONE.split('.', 1)[1]}. hostmaster.s25rbl.test. 1 3600 600 86400 300\n"
    path.write_text(soa + f"$NS 300 ns1.{ZONE.split('.', 1)[1]}.\n" + exported)
    path.chmod(0o644)
    return path


def start_rbldnsd(dataset: Path, cpu: int | None, probe: str) -> tuple[int, subprocess.Popen[bytes]]:
    """rbldnsd in the foreground (``-n``), minimal answers (``-a``: no NS in AUTHORITY, as
    s25rbl), as the rbldns user; returns (port, process) once ``probe`` is answered."""
    # rbldnsd drops root for the rbldns user: it must be able to reach the data.
    for parent in [dataset.parent, *dataset.parent.parents]:
        if parent == Path("/tmp") or parent == Path("/"):
            break
        parent.chmod(parent.stat().st_mode | 0o755)
    port = upstream.free_port()
    argv = [RBLDNSD, "-n", "-a", "-q", "-u", "rbldns", "-b", f"127.0.0.1/{port}", "-w", str(dataset.parent)]
    argv.append(f"{ZONE}:ip4set:{dataset.name}")
    proc = subprocess.Popen(
        upstream.taskset(cpu, argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    upstream.wait_answer(port, proc, probe, 1, timeout=60)
    return port, proc


# ---------------------------------------------------------------------------------------
# dnsperf


@dataclass
class Perf:
    label: str
    stats: dict[str, float] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    rcodes: dict[str, int] = field(default_factory=dict)
    server_cpu: float = 0.0  # share of one core while dnsperf ran
    server_cpu_seconds: float = 0.0  # the server's utime + stime over the same window
    steal: tuple[float, ...] = (0.0, 0.0)  # share of the run the hypervisor took the server's / load's core
    raw: str = ""

    @property
    def qps(self) -> float:
        return self.stats.get("qps", 0.0)

    @property
    def lost(self) -> int:
        return int(self.stats.get("lost", 0))

    @property
    def sent(self) -> int:
        return int(self.stats.get("sent", 0))

    @property
    def completed(self) -> int:
        return int(self.stats.get("completed", 0))

    @property
    def cpu_per_answer(self) -> float:
        """The server's CPU seconds per answer dnsperf received (0 if none was)."""
        return self.server_cpu_seconds / self.completed if self.completed else 0.0

    def p(self, q: float) -> float:
        return percentile(self.latencies, q)

    def line(self) -> str:
        st = self.stats
        loss = self.lost / max(self.sent, 1)
        spread = ""
        if self.latencies:  # dnsperf -v only
            spread = f"p50 {self.p(0.5) * 1e3:6.3f}  p99 {self.p(0.99) * 1e3:6.3f}  "
            spread += f"p99.9 {self.p(0.999) * 1e3:6.3f}  "
        return (
            f"{self.label}: {self.qps:>9,.0f} q/s  mean {st.get('avg', 0) * 1e3:6.3f} ms  {spread}"
            f"max {st.get('max', 0) * 1e3:7.2f} ms  lost {self.lost}/{self.sent} ({loss:.3%})  "
            f"server cpu {self.server_cpu:.0%} = {self.cpu_per_answer * 1e6:.2f} µs/answer  "
            f"steal {self.steal[0]:.1%} / {self.steal[1]:.1%}"
        )


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def dnsperf(
    label: str,
    port: int,
    queries: Path,
    *,
    server_pid: int | None,
    clients: int = 10,
    inflight: int = 150,
    duration: float = 20.0,
    rate: int | None = None,
    passes: int | None = None,
    verbose: bool = True,
    out: Path | None = None,
) -> Perf:
    """One dnsperf run on ``LOAD_CPU``; with ``verbose``, every query's latency (``-v``,
    written to a file while it runs, parsed afterwards)."""
    argv = ["dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(queries), "-c", str(clients)]
    argv += ["-q", str(inflight), "-l", f"{duration:g}"]
    if rate is not None:
        argv += ["-Q", str(rate)]
    if passes is not None:
        argv += ["-n", str(passes)]
    if verbose:
        argv.append("-v")
    path = out or queries.with_suffix(".dnsperf.out")
    cpu0 = upstream.cpu_seconds(server_pid) if server_pid else 0.0
    steal = upstream.StealMeter(SERVER_CPU, LOAD_CPU)
    t0 = time.monotonic()
    with path.open("wb") as sink:
        proc = subprocess.Popen(upstream.taskset(LOAD_CPU, argv), stdout=sink, stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout=duration * 3 + 60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    perf = Perf(label)
    wall = time.monotonic() - t0
    perf.steal = steal.shares(wall)
    if server_pid:
        perf.server_cpu_seconds = upstream.cpu_seconds(server_pid) - cpu0
        perf.server_cpu = perf.server_cpu_seconds / max(wall, 1e-9)
    summary: list[str] = []
    with path.open("r", errors="replace") as f:
        for line in f:
            if line.startswith("> "):
                with contextlib.suppress(ValueError):
                    perf.latencies.append(float(line[line.rindex(" ") + 1 :]))
            else:
                summary.append(line)
    path.unlink()
    perf.raw = "".join(summary)
    for key, pattern in STAT_PATTERNS.items():
        match = re.search(pattern, perf.raw)
        if match:
            perf.stats[key] = float(match.group(1))
    match = re.search(r"Response codes:\s+(.*)", perf.raw)
    if match:
        for part in match.group(1).split(","):
            bits = part.split()
            if len(bits) >= 2:
                perf.rcodes[bits[0]] = int(bits[1])
    if "qps" not in perf.stats:
        raise RuntimeError(f"dnsperf gave no statistics:\n{perf.raw[-2000:]}")
    return perf


def compare_answers(
    names: list[tuple[str, str]], port_a: int, port_b: int, timeout: float = 2.0
) -> tuple[int, list[str]]:
    """Ask both servers each question; (questions compared, differences) on rcode, A, TXT."""
    import socket

    def ask(port: int, name: str, qtype: int) -> bytes:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            packet = upstream.query_packet(0x4242, name, qtype)
            s.sendto(packet, ("127.0.0.1", port))
            return s.recv(4096)

    def summary(data: bytes, qlen: int) -> str:
        text = parse_answer(data, qlen)
        txt = re.findall(rb"be patient[^\x00]*", data)
        return f"{text} {txt[0].decode(errors='replace') if txt else ''}".strip()

    diffs: list[str] = []
    for name, qtype in names:
        code = 16 if qtype == "TXT" else 1
        qlen = len(upstream.query_packet(0, name, code))
        a, b = summary(ask(port_a, name, code), qlen), summary(ask(port_b, name, code), qlen)
        if a != b:
            diffs.append(f"{name} {qtype}: {a!r} vs {b!r}")
    return len(names), diffs


# ---------------------------------------------------------------------------------------
# Both servers loaded with the same blacklist, s25rbl's answer cache warmed


@dataclass
class Rig:
    """s25rbl and rbldnsd answering the same questions; s25rbl warmed (``start``)."""

    work: Path
    count: int
    inflight: int = 150
    cli_import: bool = True  # False: bulk insert (same rows, minutes faster for 100,000)
    dns_extra: str = ""  # lines for s25rbl's [dns] section (``udp_batch = 0``, say)
    data: Data | None = None
    queries: Path | None = None
    server: Server | None = None
    rbldnsd: subprocess.Popen[bytes] | None = None
    rbldnsd_port: int = 0
    unbound: object = None

    def start(self, log: bool = True) -> None:
        def say(text: str) -> None:
            if log:
                print(text, flush=True)

        t0 = time.monotonic()
        data = self.data = generate(self.count, self.count, 2 * self.count)
        black, self.queries = write_inputs(self.work, data)
        uport, self.unbound = unbound_for(self.work, data, cpu=LOAD_CPU)
        txt = sum(q == "TXT" for _, q in data.queries) / len(data.queries)
        say(
            f"data: {self.count:,} listed + {self.count:,} unlisted addresses (clean PTR + A, TTL 3600, "
            f"on a loopback unbound), {len(data.queries):,} questions (half listed, {txt:.0%} TXT); "
            f"generated in {time.monotonic() - t0:.1f} s"
        )
        config, db = self.work / "s25rbl.toml", self.work / "s25rbl.sqlite"
        write_config(config, uport, db, rdns_cache=max(200_000, 2 * self.count), extra=self.dns_extra)
        t0 = time.monotonic()
        if self.cli_import:
            s25rbl_cli(config, "migrate")  # only serve and migrate create a store
            s25rbl_cli(config, "import", str(black), "--list", "black")
            how = "s25rbl import"
        else:
            bulk_blacklist(db, data.listed)
            how = "bulk insert"
        t_import = time.monotonic() - t0
        exported = s25rbl_cli(config, "export", "--format", "rbldnsd")
        dataset = rbldnsd_dataset(self.work, exported)
        say(
            f"{how} of {self.count:,} blacklist IPs (migrations included): {t_import:.1f} s; "
            f"rbldnsd dataset from s25rbl export: {exported.count(chr(10)):,} lines"
        )
        self.server = start_server(config, SERVER_CPU if SERVER_CPU is not None else 0)
        self.rbldnsd_port, self.rbldnsd = start_rbldnsd(dataset, SERVER_CPU, query_name(data.listed[0]))
        say(
            f"s25rbl on 127.0.0.1:{self.server.port}, rbldnsd on 127.0.0.1:{self.rbldnsd_port}, "
            f"both pinned to cpu {SERVER_CPU}; dnsperf pinned to cpu {LOAD_CPU}"
        )
        warm = self.perf("warm-up s25rbl", "s25rbl", inflight=100, duration=600, passes=1, verbose=False)
        say(f"  {warm.line()}  (one pass: each unlisted address looked up once)")
        again = self.perf("2nd pass s25rbl", "s25rbl", duration=600, passes=1, verbose=False)
        say(f"  {again.line()}  (from the answer cache)")
        warm_r = self.perf("warm-up rbldnsd", "rbldnsd", duration=600, passes=1, verbose=False)
        say(f"  {warm_r.line()}")
        sample = data.queries[:: max(1, len(data.queries) // 400)]
        compared, diffs = compare_answers(sample, self.server.port, self.rbldnsd_port)
        same = compared - len(diffs)
        say(f"same answers (rcode, A, TXT) from both on {same} of {compared} sampled questions")
        for diff in diffs[:10]:
            say(f"  differs: {diff}")

    def perf(self, label: str, which: str, **kw: object) -> Perf:
        assert self.server is not None and self.rbldnsd is not None and self.queries is not None
        if which == "s25rbl":
            port, pid = self.server.port, self.server.proc.pid
        else:
            port, pid = self.rbldnsd_port, self.rbldnsd.pid
        kw.setdefault("inflight", self.inflight)
        return dnsperf(label, port, self.queries, server_pid=pid, **kw)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.server is not None:
            upstream.stop(self.server.proc)
        upstream.stop(self.rbldnsd)
        upstream.stop(self.unbound)  # type: ignore[arg-type]


def bulk_blacklist(db: Path, addresses: list[ipaddress.IPv4Address]) -> float:
    """Migrate a new SQLite store and insert blacklist IP entries in one statement (seconds).

    Much faster than ``s25rbl import`` for big files; used where the import is not what is
    being shown."""
    import asyncio
    from datetime import UTC, datetime

    from sqlalchemy import insert

    from s25rbl.lists.values import EntryKind, EntrySource, ListName
    from s25rbl.store.db import Store, migrate
    from s25rbl.store.models import Entry

    t0 = time.perf_counter()
    migrate(f"sqlite:///{db}")
    now = datetime.now(UTC)
    rows = [
        {
            "list": ListName.BLACK,
            "kind": EntryKind.IP,
            "value": str(ip),
            "source": EntrySource.IMPORTED,
            "created_at": now,
            "updated_at": now,
            "reason": "",
            "created_by": "bench",
            "hit_count": 0,
        }
        for ip in addresses
    ]

    async def go() -> None:
        store = Store(f"sqlite:///{db}")
        try:
            async with store.transaction() as session:
                await session.execute(insert(Entry), rows)
        finally:
            await store.close()

    asyncio.run(go())
    return time.perf_counter() - t0
