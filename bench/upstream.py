"""A local, loopback-only unbound serving generated records, for benchmarks (not tests).

Same approach as ``bench/resolvers.py``: unbound in the foreground with ``local-zone`` /
``local-data`` only (``module-config: "iterator"``), so it answers from memory and, with TTL 0
records, nothing is cached by anyone on the way. Unlike ``resolvers.py`` the caller chooses
the zones and records, and ``"."`` itself is a static local zone, so a name outside the
generated data gets NXDOMAIN instead of a recursion towards the Internet.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

UNBOUND = "/usr/sbin/unbound"


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for clients' ephemeral ports (``ip_local_port_range``)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A port number free for both UDP and TCP on 127.0.0.1 (good enough locally).

    The port is drawn below the kernel's ephemeral range, so that no client's outgoing
    connection (the benchmarks run beside one another, and make thousands) can take it
    between this check and the server's bind; a few are tried before giving up.
    """
    low, high = _ephemeral_range()
    below, above = (10_000 if low > 20_000 else 1_024, low), (high + 1, 65_536)
    span = max(below, above, key=lambda r: r[1] - r[0])
    if span[1] - span[0] < 1_000:
        span = (1_024, 65_536)
    draw = random.Random()
    last: OSError | None = None
    for _ in range(100):
        port = draw.randrange(*span)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.bind(("127.0.0.1", port))
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                    tcp.bind(("127.0.0.1", port))
        except OSError as exc:
            last = exc
            continue
        return port
    raise OSError(f"no port free for both UDP and TCP on 127.0.0.1 after 100 tries: {last}")


def taskset(cpu: int | None, argv: list[str]) -> list[str]:
    """``argv`` run under ``taskset -c CPU`` (unchanged when cpu is None or one core only)."""
    if cpu is None or (os.cpu_count() or 1) < 2:
        return argv
    return ["taskset", "-c", str(cpu), *argv]


def soa(zone: str) -> str:
    """A TTL-0 SOA with a zero negative TTL (MINIMUM), so even NXDOMAIN is not cached."""
    zone = zone.rstrip(".") + "."
    return f"{zone} 0 IN SOA ns.invalid. hostmaster.invalid. 1 3600 600 86400 0"


def write_unbound_conf(workdir: Path, port: int, zones: Iterable[str], records: Iterable[str]) -> Path:
    """An unbound.conf serving ``zones`` (static, each with a TTL-0 SOA) and ``records``.

    ``records`` are presentation-format RRs (``owner TTL IN TYPE RDATA``), one per item.
    """
    conf = workdir / "unbound.conf"
    with conf.open("w") as out:
        out.write(
            "server:\n"
            "  verbosity: 0\n"
            f"  interface: 127.0.0.1@{port}\n"
            f"  port: {port}\n"
            "  do-ip6: no\n"
            "  do-daemonize: no\n"
            '  chroot: ""\n'
            '  username: ""\n'
            f'  directory: "{workdir}"\n'
            '  pidfile: ""\n'
            "  use-syslog: no\n"
            '  logfile: ""\n'
            "  num-threads: 1\n"
            "  access-control: 127.0.0.0/8 allow\n"
            '  module-config: "iterator"\n'
            "  so-rcvbuf: 4m\n"
            "  so-sndbuf: 4m\n"
            # Never recurse: anything not generated below is answered NXDOMAIN from here.
            '  local-zone: "." static\n'
        )
        out.write(f'  local-data: "{soa(".")}"\n')
        for zone in zones:
            zone = zone.rstrip(".") + "."
            # Declaring a zone also overrides unbound's built-in empty zones (for example
            # the RFC 6598 reverse zones 64.100.in-addr.arpa ... 127.100.in-addr.arpa).
            out.write(f'  local-zone: "{zone}" static\n')
            out.write(f'  local-data: "{soa(zone)}"\n')
        for rr in records:
            out.write(f'  local-data: "{rr}"\n')
        out.write("remote-control:\n  control-enable: no\n")
    return conf


def start_unbound(conf: Path, cpu: int | None, log: Path | None = None) -> subprocess.Popen[bytes]:
    """unbound in the foreground, in its own session, pinned to ``cpu``; output to ``log``."""
    out = log.open("wb") if log is not None else None
    try:
        return subprocess.Popen(
            taskset(cpu, [UNBOUND, "-d", "-c", str(conf)]),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    finally:
        if out is not None:
            out.close()


def query_packet(qid: int, name: str, qtype: int) -> bytes:
    """A plain recursive-desired query for ``name`` (no trailing dot needed)."""
    wire = b"".join(bytes((len(label),)) + label.encode() for label in name.strip(".").split("."))
    header = qid.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    return header + wire + b"\x00" + qtype.to_bytes(2, "big") + b"\x00\x01"


def wait_answer(
    port: int,
    proc: subprocess.Popen[bytes] | subprocess.Popen[str],
    name: str,
    qtype: int,
    timeout: float = 60.0,
) -> bytes:
    """Ask ``name`` until a NOERROR answer with records comes back; the first such reply."""
    query = query_packet(0x1234, name, qtype)
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited with status {proc.returncode}")
            sock.sendto(query, ("127.0.0.1", port))
            try:
                data = sock.recv(4096)
            except OSError:
                continue
            if data[:2] == b"\x12\x34" and data[3] & 0x0F == 0 and data[7] >= 1:
                return data
    raise RuntimeError(f"no answer for {name} on 127.0.0.1:{port} within {timeout:g} s")


def stop(proc: subprocess.Popen[bytes] | subprocess.Popen[str] | None, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; only this process (it is ours by pid)."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a running process (all its threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    # After "pid (comm)": field 3 is state, so utime (14) and stime (15) are at 11 and 12.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def steal_seconds(cpu: int | None) -> float:
    """Time the hypervisor took core ``cpu`` away from this machine (``steal`` in /proc/stat;
    0 on bare metal). A server that is not running cannot answer: a run with much of it has
    worse latencies through no fault of the server's, so runs print it beside their figures.
    0 when no core is named (a one-core machine pins nothing)."""
    if cpu is None:
        return 0.0
    with open("/proc/stat", "rb") as f:
        for line in f:
            fields = line.split()
            if fields[0] == f"cpu{cpu}".encode():
                return int(fields[8]) / os.sysconf("SC_CLK_TCK") if len(fields) > 8 else 0.0
    return 0.0


class StealMeter:
    """The steal of some cores (``steal_seconds``) from when it is made: ``shares(seconds)``
    gives each core's share of a run of that many seconds."""

    def __init__(self, *cpus: int | None) -> None:
        self._cpus = cpus
        self._start = [steal_seconds(cpu) for cpu in cpus]

    def shares(self, seconds: float) -> tuple[float, ...]:
        return tuple(
            (steal_seconds(cpu) - start) / max(seconds, 1e-9)
            for cpu, start in zip(self._cpus, self._start, strict=True)
        )
