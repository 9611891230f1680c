"""``dns.workers``: one DNS worker process against two on one port (SO_REUSEPORT), cached answers.

Usage: .venv/bin/python bench/workers.py [--quick] [--addresses N] [--duration S] [--runs R]

The data of ``cached.py`` (N listed + N unlisted addresses, 2N questions; the blacklist is
bulk-inserted into the SQLite store rather than imported with the CLI, which is slow for
100,000 lines), served by ``s25rbl serve --dns-only`` processes (DNS-only nodes, each
with its own lists, caches and ``ListSync``) bound to one port with SO_REUSEPORT (a fresh port per layout), in
three layouts on two cores:

- 1 worker on cpu 1 (dnsperf on cpu 0): the baseline;
- 2 workers, both on cpu 1: what SO_REUSEPORT costs when there is no core to gain;
- 2 workers, on cpu 0 and cpu 1 (the first shares its core with dnsperf).

Each layout is started, warmed with two passes over the questions (each worker caches the
answers to the clients the kernel sends it), then measured with ``dnsperf -c 10 -q 150
-l 20`` (``--runs`` times, default 2; no ``-v``: throughput only). Prints queries/s, mean and
max latency, loss, and the workers' CPU (sum, in cores).
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from common import (
    LOAD_CPU,
    ROOT,
    TWO_CPUS,
    Perf,
    bulk_blacklist,
    dnsperf,
    generate,
    unbound_for,
    upstream,
    write_config,
    write_inputs,
)

LAYOUTS = {
    "1 worker, cpu 1": [1],
    "2 workers, both on cpu 1": [1, 1],
    "2 workers, cpu 0 + cpu 1": [0, 1],
}


def start_workers(config: Path, cpus: list[int], timeout: float = 60) -> list[subprocess.Popen[str]]:
    procs: list[subprocess.Popen[str]] = []
    try:
        for cpu in cpus:
            argv = [sys.executable, "-m", "s25rbl", "--config", str(config), "serve", "--dns-only"]
            proc = subprocess.Popen(
                upstream.taskset(cpu if TWO_CPUS else None, argv),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                text=True, cwd=ROOT, start_new_session=True,
            )  # fmt: skip
            procs.append(proc)
            ready = threading.Event()
            output: list[str] = []

            def pump(
                p: subprocess.Popen[str] = proc, out: list[str] = output, ev: threading.Event = ready
            ) -> None:
                assert p.stdout is not None
                for line in p.stdout:
                    out.append(line)
                    if re.search(r"serving DNS \(udp\+tcp\) on", line):
                        ev.set()

            threading.Thread(target=pump, daemon=True).start()
            deadline = time.monotonic() + timeout
            while not ready.wait(0.1):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("worker did not start:\n" + "".join(output))
    except BaseException:
        for proc in procs:
            upstream.stop(proc)
        raise
    return procs


def start_on_free_port(
    write: Callable[[int], Path], cpus: list[int], attempts: int = 5
) -> tuple[int, list[subprocess.Popen[str]]]:
    """Start a layout's workers on a port free right now, written into the configuration.

    A port found free can be taken before the workers bind it (by another process's
    outgoing connection, in the gap after the previous layout stopped), so each layout
    gets its own port and a few are tried before giving up."""
    for attempt in range(attempts):
        port = upstream.free_port()
        try:
            return port, start_workers(write(port), cpus)
        except RuntimeError as exc:
            if "Address already in use" not in str(exc) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def cpu_of(pids: list[int]) -> float:
    return sum(upstream.cpu_seconds(pid) for pid in pids)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 addresses, 1 s runs (smoke run)")
    parser.add_argument("--addresses", type=int, help="listed addresses, as many unlisted (100,000)")
    parser.add_argument("--duration", type=float, help="dnsperf -l per run (default 20 s)")
    parser.add_argument("--runs", type=int, help="runs per layout (default 2)")
    args = parser.parse_args()
    count = args.addresses or (2_000 if args.quick else 100_000)
    duration = args.duration or (1.0 if args.quick else 20.0)
    runs = args.runs or (1 if args.quick else 2)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    unbound: object = None
    workers: list[subprocess.Popen[str]] = []
    with tempfile.TemporaryDirectory(prefix="s25rbl-workers-") as tmp:
        work = Path(tmp)
        try:
            data = generate(count, count, 2 * count)
            _black, queries = write_inputs(work, data)
            uport, unbound = unbound_for(work, data, cpu=LOAD_CPU)
            config, db = work / "s25rbl.toml", work / "s25rbl.sqlite"

            def configure(port: int) -> Path:
                write_config(config, uport, db, rdns_cache=max(200_000, 2 * count), port=port)
                return config

            took = bulk_blacklist(db, data.listed)
            print(
                f"workers: {count:,} listed + {count:,} unlisted addresses, {len(data.queries):,} questions; "
                f"store filled in {took:.1f} s; dnsperf on cpu {LOAD_CPU}, "
                f"-c 10 -q 150 -l {duration:g}",
                flush=True,
            )
            results: dict[str, list[Perf]] = {}
            for label, cpus in LAYOUTS.items():
                port, workers = start_on_free_port(configure, cpus)
                pids = [w.pid for w in workers]
                for n in (1, 2):
                    c0, t0 = cpu_of(pids), time.monotonic()
                    warm = dnsperf(f"{label}: warm-up {n}", port, queries, server_pid=None, inflight=100,
                                   duration=600, passes=1, verbose=False)  # fmt: skip
                    warm.server_cpu_seconds = cpu_of(pids) - c0
                    warm.server_cpu = warm.server_cpu_seconds / (time.monotonic() - t0)
                    print(f"  {warm.line()}", flush=True)
                for n in range(1, runs + 1):
                    c0, t0 = cpu_of(pids), time.monotonic()
                    perf = dnsperf(f"{label}: run {n}", port, queries, server_pid=None, duration=duration,
                                   verbose=False)  # fmt: skip
                    perf.server_cpu_seconds = cpu_of(pids) - c0
                    perf.server_cpu = perf.server_cpu_seconds / (time.monotonic() - t0)
                    results.setdefault(label, []).append(perf)
                    print(perf.line(), flush=True)
                for w in workers:
                    upstream.stop(w)
                workers = []
            print("\nbest run per layout:")
            base = max(p.qps for p in results[next(iter(LAYOUTS))])
            for label, perfs in results.items():
                top = max(p.qps for p in perfs)
                cpu = min(p.cpu_per_answer for p in perfs)
                print(
                    f"  {label:26} {top:>9,.0f} q/s  ({top / base:.2f} x 1 worker); "
                    f"{cpu * 1e6:.2f} µs CPU per answer"
                )
        except KeyboardInterrupt:
            print("\ninterrupted; cleaning up", file=sys.stderr)
            return 130
        finally:
            for w in workers:
                upstream.stop(w)
            upstream.stop(unbound)  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main())
