"""Runs ``s25rbl ... serve`` with probes for a benchmark (not a test): the event loop's stalls
and the garbage collector's pauses from when the server is ready (start-up's own are not
counted) and, optionally, cProfile. The report is written as JSON every second and when the
server stops (SIGTERM).

    python bench/serve_probe.py --report OUT.json [--profile OUT.prof] -- --config CFG serve

A stall is a tick of a 1 ms timer that ran late: the loop was busy with something else (its
thread's CPU time during the stall says how much of it was this process's own work; the rest
is the process waiting for a core). The probe itself costs a little CPU (a thousand ticks a
second), so CPU per request is measured without it.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TICK = 0.001
STALL = 0.002  # a tick this much later than due is recorded as a stall
MAX_MARKS = 20_000  # stalls of 5 ms or more kept with their time, for the count per phase


class Probe:
    def __init__(self) -> None:
        # the longest: (lateness s, loop cpu s, when: perf_counter, CLOCK_MONOTONIC like the bench's)
        self.stalls: list[tuple[float, float, float]] = []
        self.over = dict.fromkeys((2, 5, 10, 20, 50), 0)  # stalls of at least so many ms
        self.marks: list[tuple[float, float]] = []  # (when, lateness s) of stalls of 5 ms or more
        self.ticks = 0
        self.gc: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._gc_started = 0.0
        self._gc_generation = 0
        self.started = time.perf_counter()

    def reset(self) -> None:
        """Count from now on (the server is ready)."""
        self.stalls.clear()
        self.over = dict.fromkeys(self.over, 0)
        self.marks.clear()
        self.gc = {0: [], 1: [], 2: []}
        self.ticks = 0
        self.started = time.perf_counter()

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.thread_time()  # CPU time: a pause, not the core's other users
            self._gc_generation = info["generation"]
        else:
            self.gc[self._gc_generation].append(time.thread_time() - self._gc_started)

    async def watch(self, report: Path) -> None:
        written = time.perf_counter()
        while True:
            if time.perf_counter() - written >= 1.0:  # also there if the server is killed
                report.write_text(json.dumps(self.report()))
                written = time.perf_counter()
            wall, cpu = time.perf_counter(), time.thread_time()
            await asyncio.sleep(TICK)
            late = time.perf_counter() - wall - TICK
            self.ticks += 1
            if late >= STALL:
                for ms in self.over:
                    self.over[ms] += late * 1000 >= ms
                self.stalls.append((late, time.thread_time() - cpu, wall))
                if late >= 0.005 and len(self.marks) < MAX_MARKS:
                    self.marks.append((wall, late))
                if len(self.stalls) > 100:
                    self.stalls = sorted(self.stalls, reverse=True)[:10]

    def report(self) -> dict[str, Any]:
        stalls = sorted(self.stalls, reverse=True)
        return {
            "seconds": time.perf_counter() - self.started,
            "ticks": self.ticks,
            "stalls_over_ms": {str(ms): count for ms, count in self.over.items()},
            "marks": [{"at": at, "late_ms": late * 1e3} for at, late in self.marks],
            "longest": [
                {"late_ms": late * 1e3, "loop_cpu_ms": cpu * 1e3, "at": at} for late, cpu, at in stalls[:10]
            ],
            "gc": {
                str(gen): {
                    "count": len(pauses),
                    "total_ms": sum(pauses) * 1e3,
                    "max_ms": max(pauses, default=0.0) * 1e3,
                }
                for gen, pauses in self.gc.items()
            },
        }


def report_probe(probe: Path | None, profile: Path | None, phases: list[tuple[str, float]]) -> None:
    """What bench/serve_probe.py saw of s25rbl from when it was ready: the DNS warm-up, the
    maximum rate, the fixed rate (``phases``: their names and perf_counter starts)."""
    if probe is None or not probe.exists():
        return
    import json

    def phase(at: float) -> str:
        return next((name for name, start in reversed(phases) if at >= start), "start")

    seen = json.loads(probe.read_text())
    longest = ", ".join(
        f"{s['late_ms']:.1f} ({s['loop_cpu_ms']:.1f} cpu, {phase(s['at'])})" for s in seen["longest"][:6]
    )
    gcs = ", ".join(
        f"gen{g} {v['count']}x max {v['max_ms']:.1f} ms" for g, v in seen["gc"].items() if v["count"]
    )
    by_phase: dict[str, list[int]] = {}  # phase -> stalls of >= 5 and >= 10 ms
    for mark in seen.get("marks", []):
        counts = by_phase.setdefault(phase(mark["at"]), [0, 0])
        counts[0] += 1
        counts[1] += mark["late_ms"] >= 10
    per_phase = "; ".join(f"{name} {five}/{ten}" for name, (five, ten) in by_phase.items())
    print(
        f"  s25rbl's loop over {seen['seconds']:.0f} s from ready: stalls >= 2/5/10/20/50 ms: "
        f"{'/'.join(str(n) for n in seen['stalls_over_ms'].values())}; longest ms "
        f"(loop thread's CPU in it, phase): {longest}\n"
        f"  stalls >= 5/10 ms by phase: {per_phase or 'none'}\n"
        f"  GC pauses: {gcs or 'none'}",
        flush=True,
    )
    if profile is not None and profile.exists():
        import pstats

        print("  -- cProfile of s25rbl (profiling slows it down) --", flush=True)
        pstats.Stats(str(profile)).sort_stats("tottime").print_stats(30)
        sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--report", required=True, type=Path)
    parser.add_argument("--profile", type=Path)
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest

    from s25rbl.cli import commands
    from s25rbl.cli import main as cli_main

    probe = Probe()
    gc.callbacks.append(probe.on_gc)
    original = commands.serve

    async def serve(settings: Any, ready: Any = None, *a: Any, **kw: Any) -> None:
        def started(*bound: Any) -> None:
            probe.reset()  # start-up's own pauses (imports, first collection) are not counted
            if ready is not None:
                ready(*bound)

        watcher = asyncio.create_task(probe.watch(args.report))
        try:
            await original(settings, started, *a, **kw)
        finally:
            watcher.cancel()

    commands.serve = serve  # type: ignore[assignment]
    profiler = cProfile.Profile() if args.profile else None
    try:
        if profiler is not None:
            profiler.enable()
        status = cli_main(rest)
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(args.profile))
        args.report.write_text(json.dumps(probe.report()))
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
