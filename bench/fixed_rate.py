"""Cached answers at a fixed rate: latency percentiles and loss of s25rbl and rbldnsd, one run.

Usage: .venv/bin/python bench/fixed_rate.py [--quick] [--rate QPS] [--duration S] [--rounds R]

The setup of ``cached.py`` (100,000 listed + 100,000 unlisted addresses, 200,000 questions,
s25rbl warmed so that every answer comes from its answer cache, rbldnsd on the same data;
the blacklist bulk-inserted into the store rather than imported with the slower CLI),
then ``dnsperf -Q 50000 -l 20 -c 10 -q 150 -v`` against each server in turn (``--rounds``
times, default 2: s25rbl, rbldnsd, s25rbl, rbldnsd), each server pinned to cpu 1 and dnsperf
to cpu 0. Prints the rate reached, latency p50/p90/p99/p99.9/max and loss for each run.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from pathlib import Path

from common import Perf, Rig


def report(perf: Perf, rate: int) -> None:
    ms = {q: perf.p(q) * 1e3 for q in (0.5, 0.9, 0.99, 0.999)}
    print(
        f"{perf.label}: {perf.qps:,.0f} q/s of {rate:,} asked; latency p50 {ms[0.5]:.3f} ms, "
        f"p90 {ms[0.9]:.3f}, p99 {ms[0.99]:.3f}, p99.9 {ms[0.999]:.3f}, "
        f"max {perf.stats.get('max', 0) * 1e3:.2f} ms; lost {perf.lost} of {perf.sent} "
        f"({perf.lost / max(perf.sent, 1):.4%}); server cpu {perf.server_cpu:.0%}; "
        f"steal {perf.steal[0]:.1%} / {perf.steal[1]:.1%}",
        flush=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 addresses, 1 s at 5,000/s (smoke run)")
    parser.add_argument("--addresses", type=int, help="listed addresses, as many unlisted (100,000)")
    parser.add_argument("--rate", type=int, help="dnsperf -Q (default 50,000)")
    parser.add_argument("--duration", type=float, help="dnsperf -l (default 20 s)")
    parser.add_argument("--rounds", type=int, help="s25rbl, rbldnsd rounds (default 2)")
    parser.add_argument("--inflight", type=int, default=150, help="dnsperf -q (default 150)")
    args = parser.parse_args()
    count = args.addresses or (2_000 if args.quick else 100_000)
    rate = args.rate or (5_000 if args.quick else 50_000)
    duration = args.duration or (1.0 if args.quick else 20.0)
    rounds = args.rounds or (1 if args.quick else 2)

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)

    with tempfile.TemporaryDirectory(prefix="s25rbl-rate-") as tmp:
        rig = Rig(Path(tmp), count, inflight=args.inflight, cli_import=False)
        try:
            rig.start()
            print(f"runs: dnsperf -Q {rate} -l {duration:g} -c 10 -q {args.inflight} -v", flush=True)
            for n in range(1, rounds + 1):
                for which in ("s25rbl", "rbldnsd"):
                    perf = rig.perf(f"round {n} {which:7}", which, rate=rate, duration=duration)
                    report(perf, rate)
        except KeyboardInterrupt:
            print("\ninterrupted; cleaning up", file=sys.stderr)
            return 130
        finally:
            rig.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
