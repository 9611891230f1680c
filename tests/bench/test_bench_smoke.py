"""One quick run of every benchmark (tiny sizes, no timing assertions), so they cannot rot.

The scripts start together in one fixture (they spend most of their time waiting on
processes they start), and each test checks that its script ended well and printed its
report lines. They need dnsperf, rbldnsd, unbound and postgrey (Debian packages); without them
the tests skip, except under CI (S25RBL_CI set), where a missing tool fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
TIMEOUT = 120.0

SCRIPTS: dict[str, list[str]] = {
    "fresh_verdicts": ["--quick", "--duration", "1"],
    "cached": ["--quick", "--addresses", "500"],
    "fixed_rate": ["--quick", "--addresses", "500"],
    "memory": ["--quick", "--answers", "5000", "--entries", "200"],
    "scaling": ["--quick"],
    "workers": ["--quick", "--addresses", "500"],
    "ui": ["--quick"],
    "policy": ["--quick", "--probe"],
    "policy_cpu": ["--quick"],
    "hit_flush": ["--quick"],
}
TOOLS = {
    "fresh_verdicts": ("dnsperf", "unbound"),
    "cached": ("dnsperf", "unbound", "rbldnsd"),
    "fixed_rate": ("dnsperf", "unbound", "rbldnsd"),
    "workers": ("dnsperf", "unbound"),
    "policy": ("unbound", "postgrey"),
}


@dataclass
class Run:
    returncode: int
    output: str


def missing(name: str) -> list[str]:
    return [t for t in TOOLS.get(name, ()) if shutil.which(t) is None and not Path(f"/usr/sbin/{t}").exists()]


@pytest.fixture(scope="module")
def runs() -> Iterator[dict[str, Run]]:
    procs: dict[str, subprocess.Popen[str]] = {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("S25RBL_")}
    for name, args in SCRIPTS.items():
        if missing(name):
            continue
        procs[name] = subprocess.Popen(
            [sys.executable, str(BENCH / f"{name}.py"), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            env=env,
        )
    results: dict[str, Run] = {}
    deadline = time.monotonic() + TIMEOUT
    try:
        for name, proc in procs.items():
            try:
                out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.terminate()  # the scripts clean up their own processes on SIGTERM
                try:
                    out, _ = proc.communicate(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    out, _ = proc.communicate()
                out += f"\n(timed out after {TIMEOUT:g} s)"
            results[name] = Run(proc.returncode, out)
        yield results
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def result(runs: dict[str, Run], name: str) -> Run:
    absent = missing(name)
    if absent:
        message = f"{', '.join(absent)} not installed (Debian packages dnsperf, rbldnsd, unbound, postgrey)"
        if os.environ.get("S25RBL_CI"):
            pytest.fail(f"{message} (S25RBL_CI is set: CI must not skip)")
        pytest.skip(message)
    run = runs[name]
    assert run.returncode == 0, run.output[-4000:]
    return run


def test_fresh_verdicts(runs: dict[str, Run]) -> None:
    out = result(runs, "fresh_verdicts").output
    assert "fresh verdicts:" in out and "== dnsperf -q" in out and "CPU while dnsperf was sending" in out
    assert re.search(r"steal \d+\.\d% / \d+\.\d% of cpu \d / cpu \d", out), out


def test_cached(runs: dict[str, Run]) -> None:
    out = result(runs, "cached").output
    assert "same answers (rcode, A, TXT) from both on" in out
    assert "pair 1 s25rbl" in out and "pair 1 rbldnsd" in out
    assert "median ratio s25rbl/rbldnsd:" in out
    assert "ratio by CPU:" in out and "µs/answer" in out
    assert re.search(r"µs/answer  steal [\d.]+% / [\d.]+%", out)  # the hypervisor's share, each run
    assert "median CPU seconds per answer: s25rbl" in out and "median ratio by CPU (rbldnsd/s25rbl):" in out


def test_fixed_rate(runs: dict[str, Run]) -> None:
    out = result(runs, "fixed_rate").output
    assert "round 1 s25rbl" in out and "round 1 rbldnsd" in out and "p99" in out
    assert re.search(r"server cpu \d+%; steal [\d.]+% / [\d.]+%", out)


def test_memory(runs: dict[str, Run]) -> None:
    out = result(runs, "memory").output
    assert out.count("bytes per cached verdict") == 3
    for kind in ("ip ", "cidr ", "domain ", "regex ", "ip+cidr+domain+regex"):
        assert kind in out
    assert "full reload from SQLite (load_index)" in out


def test_scaling(runs: dict[str, Run]) -> None:
    out = result(runs, "scaling").output
    assert "largest / smallest list" in out
    for kind in ("ip", "cidr", "domain", "regex", "regex-unfiled"):
        assert f"\n{kind} " in out


def test_workers(runs: dict[str, Run]) -> None:
    out = result(runs, "workers").output
    assert "best run per layout:" in out and "2 workers, cpu 0 + cpu 1" in out


def test_ui(runs: dict[str, Run]) -> None:
    out = result(runs, "ui").output
    assert "review: learned" in out and "lists: search, no match" in out and "figures" in out
    assert "page rtt/API rtt" in out and "slowest page:" in out and "largest page:" in out


def test_policy(runs: dict[str, Run]) -> None:
    out = result(runs, "policy").output
    assert "s25rbl   max rate:" in out and "postgrey max rate:" in out
    assert "ratio s25rbl/postgrey:" in out and "s25rbl   at 2,000/s:" in out
    assert "median ratio s25rbl/postgrey:" in out and "median p99 at 2,000/s:" in out
    assert re.search(r"steal [\d.]+% / [\d.]+% of the server.s / load.s core\)", out)  # each run
    assert re.search(r"(of the \d+ with|no run had) steal under 1%", out)
    assert "stored triplets" in out and "10,000 max rate:" in out
    assert "s25rbl's loop over" in out and "GC pauses:" in out


def test_policy_cpu(runs: dict[str, Run]) -> None:
    out = result(runs, "policy_cpu").output
    assert "CPU per request" in out and "listed" in out and "write batch of 30:" in out
    assert "clean, parsed" in out  # the full path beside the quick one


def test_hit_flush(runs: dict[str, Run]) -> None:
    out = result(runs, "hit_flush").output
    assert "sqlite: 2000 entries hit, 1 flushes, hits stored 4000 (expected 4000)" in out
    assert "longest loop stall" in out and "best by CPU:" in out
