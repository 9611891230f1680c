"""Cached answers, s25rbl against rbldnsd in one run: the same addresses, the same questions.

Usage: .venv/bin/python bench/cached.py [--quick] [--addresses N] [--pairs P] [--duration S]
       [--udp-batch N] [--no-fast-path] [--bulk-insert]

1. Generates N listed addresses (default 100,000) and N unlisted ones in 100.64.0.0/10, and a
   dnsperf file of 2N questions (default 200,000: half on listed addresses, 90 % A / 10 % TXT,
   random order) under the blocklist zone.
2. Loads the listed ones into s25rbl's SQLite store as blacklist IP entries
   (``s25rbl import FILE --list black``, plain-IP lines), and into rbldnsd from
   ``s25rbl export --format rbldnsd`` (plus the same SOA, so NXDOMAIN carries it on both).
3. s25rbl judges an unlisted address by its reverse lookup: each has a forward-confirmed clean
   PTR name (TTL 3600) on a loopback unbound, so its answer is NXDOMAIN + SOA, as rbldnsd's.
4. Warms s25rbl with one dnsperf pass over the file (every question answered once, so every
   answer is in its answer cache; unbound is idle afterwards), and rbldnsd the same way,
   checks that both give the same answers on a sample, then runs dnsperf against each
   alternately, A B A B (``--pairs``, default 3), each server pinned to cpu 1 and dnsperf to
   cpu 0: ``dnsperf -c 10 -q 150 -l 20 -v`` (every query's latency, hence p99).
5. Prints queries/s, mean/p50/p99/max latency, loss, the server's CPU share and its CPU
   seconds per answer (utime + stime from /proc over dnsperf's run, divided by the answers
   dnsperf received) for each run; per pair and as medians, the s25rbl/rbldnsd throughput
   ratio and the ratio by CPU (rbldnsd's CPU per answer / s25rbl's: 1.0 means an answer costs
   s25rbl as much CPU as rbldnsd, 0.5 twice as much). dnsperf's own core often sets the
   throughput of both; the CPU per answer is what each server costs, and is far less
   sensitive to a busy machine.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
from pathlib import Path

from common import Perf, Rig


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 addresses, one 1 s pair (smoke run)")
    parser.add_argument("--addresses", type=int, help="listed addresses, as many unlisted (100,000)")
    parser.add_argument("--pairs", type=int, help="A B pairs (default 3)")
    parser.add_argument("--duration", type=float, help="dnsperf -l per run (default 20 s)")
    parser.add_argument("--clients", type=int, default=10, help="dnsperf -c (default 10)")
    parser.add_argument("--inflight", type=int, default=150, help="dnsperf -q (default 150)")
    parser.add_argument("--no-latencies", action="store_true", help="run dnsperf without -v")
    parser.add_argument(
        "--udp-batch", type=int, help="s25rbl's dns.udp_batch (default: its own, 64; 0: recvfrom/sendto)"
    )
    parser.add_argument(
        "--no-fast-path", action="store_true", help="s25rbl's dns.fast_path = false: cached answers in Python"
    )
    parser.add_argument(
        "--bulk-insert", action="store_true", help="fill the store with one INSERT, not `s25rbl import`"
    )
    args = parser.parse_args()
    count = args.addresses or (2_000 if args.quick else 100_000)
    pairs = args.pairs or (1 if args.quick else 3)
    duration = args.duration or (1.0 if args.quick else 20.0)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)

    with tempfile.TemporaryDirectory(prefix="s25rbl-cached-") as tmp:
        extra = "" if args.udp_batch is None else f"udp_batch = {args.udp_batch}\n"
        if args.no_fast_path:
            extra += "fast_path = false\n"
        rig = Rig(Path(tmp), count, inflight=args.inflight, cli_import=not args.bulk_insert, dns_extra=extra)
        try:
            rig.start()
            print(
                f"runs: dnsperf -c {args.clients} -q {args.inflight} -l {duration:g}"
                + ("" if args.no_latencies else " -v"),
                flush=True,
            )
            ratios: list[float] = []
            cpu_ratios: list[float] = []
            runs: list[tuple[Perf, Perf]] = []
            for n in range(1, pairs + 1):
                a = rig.perf(
                    f"pair {n} s25rbl ", "s25rbl", clients=args.clients, duration=duration,
                    verbose=not args.no_latencies,
                )  # fmt: skip
                print(a.line(), flush=True)
                b = rig.perf(
                    f"pair {n} rbldnsd", "rbldnsd", clients=args.clients, duration=duration,
                    verbose=not args.no_latencies,
                )  # fmt: skip
                print(b.line(), flush=True)
                ratio = a.qps / max(b.qps, 1e-9)
                ratios.append(ratio)
                cpu_ratio = b.cpu_per_answer / max(a.cpu_per_answer, 1e-12)
                cpu_ratios.append(cpu_ratio)
                runs.append((a, b))
                print(
                    f"pair {n} ratio s25rbl/rbldnsd: {ratio:.2f}; CPU per answer: s25rbl "
                    f"{a.cpu_per_answer * 1e6:.2f} µs, rbldnsd {b.cpu_per_answer * 1e6:.2f} µs; "
                    f"ratio by CPU: {cpu_ratio:.2f}",
                    flush=True,
                )
            print(
                f"\nratio per pair: {', '.join(f'{r:.2f}' for r in ratios)}; "
                f"median ratio s25rbl/rbldnsd: {statistics.median(ratios):.2f}"
            )
            print(
                "median queries/s: s25rbl "
                f"{statistics.median(a.qps for a, _ in runs):,.0f}, rbldnsd "
                f"{statistics.median(b.qps for _, b in runs):,.0f}"
            )
            print(
                "median CPU seconds per answer: s25rbl "
                f"{statistics.median(a.cpu_per_answer for a, _ in runs) * 1e6:.2f} µs, rbldnsd "
                f"{statistics.median(b.cpu_per_answer for _, b in runs) * 1e6:.2f} µs; "
                f"ratio by CPU per pair: {', '.join(f'{r:.2f}' for r in cpu_ratios)}; "
                f"median ratio by CPU (rbldnsd/s25rbl): {statistics.median(cpu_ratios):.2f}"
            )
        except KeyboardInterrupt:
            print("\ninterrupted; cleaning up", file=sys.stderr)
            return 130
        finally:
            rig.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
