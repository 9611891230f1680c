"""The README's tour, run as a newcomer runs it: ``scripts/serve.sh``, then every command as written.

The commands and what they print come from README.md itself: every ```` ```sh ```` block with
``# →`` lines is a list of steps (a command, with its continuation lines and here-document,
then the ``# →`` lines that say what it prints). Each expected line must appear, in order, in
the command's output (whitespace runs compared as one space); ``# online →`` and ``# offline →``
lines apply only to a machine whose resolver reaches the internet, or to one without one.
The banner block (the one starting ``s25rbl <version> serving DNS``) must match what the
server prints, with the README's home directory replaced by the test's.

Each run gets a network namespace of its own, so the README's ports (5300, 8300) are free and
nothing reaches the host's network; its ``/etc/resolv.conf`` names ``127.0.0.53``, where an
"online" run has a fake resolver that knows nothing (like the internet for the documentation
addresses: no PTR anywhere) and an "offline" run has nothing at all. ``serve.sh`` and its
``bootstrap.sh`` run from a scratch copy of ``scripts/`` whose ``.venv`` is already set up
(``bin/s25rbl`` runs this checkout's code with the test's interpreter), so nothing is
installed or downloaded. The commands run one by one in one bash session (the API block sets
``TOKEN`` for the next commands); a ``dig`` whose answer is not yet what the README says is
asked again for a few seconds, since list changes made with the CLI reach the server within
``lists.refresh_interval``.

Needs root and ``ip netns``, ``dig`` and ``curl``: without them the tests skip, or fail when
``S25RBL_CI`` is set.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.netns import (
    PREFIX,
    REPO,
    LabUnavailable,
    NetNamespace,
    check_netns_support,
    cleanup_stale,
    require_program,
    start_reaper,
)
from tests.integration.server import RunningServer, attach
from tests.support.fakedns import FakeAuthority

pytestmark = pytest.mark.interop

README = REPO / "README.md"
MODES = ("online", "offline")
README_HOME = "/home/alice"  # the home directory the README's banner shows
RESOLVER = "127.0.0.53"  # resolv.conf's nameserver inside the namespace
STEP_TIMEOUT = 60.0
DIG_RETRY_SECONDS = 5.0

_EXPECT = re.compile(r"^#\s*(?:(online|offline)\s+)?→\s?(.*)$")
_HEREDOC = re.compile(r"<<-?\s*(['\"]?)(\w+)\1")


# ------------------------------------------------------------------------ the README


@dataclass(frozen=True)
class Step:
    """One command of the README and what it prints: (mode or None for both, text) pairs."""

    line: int  # README line of the command's first line
    command: str
    expect: tuple[tuple[str | None, str], ...]

    def expected(self, mode: str) -> list[str]:
        return [text for when, text in self.expect if when in (None, mode)]


def _fenced_blocks(text: str) -> Iterator[tuple[str, int, list[str]]]:
    """(info string, line number of the first content line, lines) of every fenced block."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = re.match(r"^```(.*)$", lines[i])
        if opening is None:
            i += 1
            continue
        body, j = [], i + 1
        while j < len(lines) and not lines[j].startswith("```"):
            body.append(lines[j])
            j += 1
        yield opening.group(1).strip(), i + 2, body
        i = j + 1


def _block_steps(first_line: int, lines: list[str]) -> list[Step]:
    steps: list[Step] = []
    command: list[str] = []
    start = 0
    expect: list[tuple[str | None, str]] = []

    def finish() -> None:
        if command:
            steps.append(Step(start, "\n".join(command), tuple(expect)))
        command.clear()
        expect.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        match = _EXPECT.match(line.strip())
        if match:
            if not command:
                raise AssertionError(f"README.md:{first_line + i}: a '# →' line with no command before it")
            expect.append((match.group(1), match.group(2).strip()))
        elif not line.strip() or line.lstrip().startswith("#"):
            pass  # prose for the reader (or a blank line): ends nothing, runs nothing
        else:
            finish()
            start = first_line + i
            command.append(line)
            # Continuation lines, then here-document bodies, belong to the same command.
            while command[-1].endswith("\\") and i + 1 < len(lines):
                i += 1
                command.append(lines[i])
            for heredoc in _HEREDOC.finditer("\n".join(command)):
                terminator = heredoc.group(2)
                while i + 1 < len(lines):
                    i += 1
                    command.append(lines[i])
                    if lines[i].strip() == terminator:
                        break
                else:
                    raise AssertionError(f"README.md:{start}: here-document {terminator} never ends")
        i += 1
    finish()
    return steps


def tour_steps(text: str) -> list[Step]:
    """Every step of every ``sh`` block that says what some command prints, in README order."""
    steps: list[Step] = []
    for info, first_line, lines in _fenced_blocks(text):
        if info.split()[:1] == ["sh"] and any(_EXPECT.match(line.strip()) for line in lines):
            steps.extend(_block_steps(first_line, lines))
    return steps


def banner_lines(text: str) -> list[str]:
    """The serve banner as the README shows it."""
    for _, _, lines in _fenced_blocks(text):
        if lines and re.match(r"^s25rbl \S+ serving DNS", lines[0]):
            return lines
    raise AssertionError("README.md shows no serve banner (a block starting 's25rbl <version> serving DNS')")


def _squash(text: str) -> str:
    return " ".join(text.split())


def missing(output: str, expected: list[str]) -> str | None:
    """The first expected text not found in ``output`` (in order, each within one line), or None."""
    lines = [_squash(line) for line in output.splitlines()]
    at, column = 0, 0
    for want in expected:
        wanted = _squash(want)
        while at < len(lines):
            found = lines[at].find(wanted, column)
            if found >= 0:
                column = found + len(wanted)
                break
            at, column = at + 1, 0
        else:
            return want
    return None


# ----------------------------------------------------------------- the reader's machine


class Shell:
    """One bash session inside the namespace: runs steps one at a time, like a terminal."""

    def __init__(self, ns: NetNamespace, cwd: Path, env: dict[str, str], scratch: Path) -> None:
        self.scratch = scratch
        self.process = subprocess.Popen(
            ns.argv("bash", "--noprofile", "--norc"),
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()
        self._count = 0

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)

    def run(self, command: str, timeout: float = STEP_TIMEOUT) -> tuple[int, str]:
        """(exit status, stdout+stderr) of ``command``, run in this session (variables persist)."""
        self._count += 1
        script = self.scratch / f"step-{self._count}.sh"
        output = self.scratch / f"step-{self._count}.out"
        script.write_text(command + "\n")
        marker = f"@@tour-step-{self._count}@@"
        assert self.process.stdin is not None
        self.process.stdin.write(f'. {script} </dev/null >{output} 2>&1; echo "{marker} $?"\n')
        self.process.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no answer within {timeout} s to:\n{command}") from None
            if line.startswith(marker):
                return int(line.split()[-1]), output.read_text(errors="replace")

    def close(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        with contextlib.suppress(OSError):
            self.process.stdin.close()  # end of input: bash exits
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._pump_thread.join(5)
        self.process.stdout.close()


def scratch_checkout(root: Path) -> Path:
    """``scripts/`` and ``pyproject.toml`` of this checkout, with a ``.venv`` bootstrap.sh accepts."""
    checkout = root / "s25rbl"
    shutil.copytree(REPO / "scripts", checkout / "scripts")
    shutil.copy2(REPO / "pyproject.toml", checkout / "pyproject.toml")
    venv = checkout / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").symlink_to(sys.executable)
    wrapper = venv / "s25rbl"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m s25rbl "$@"\n')
    wrapper.chmod(0o755)
    stamp = checkout / ".venv" / ".s25rbl-installed-fast"  # bootstrap.sh's "already installed"
    stamp.touch()
    os.utime(checkout / "pyproject.toml", (0, 0))  # older than the stamp: no pip install
    return checkout


def reader_env(home: Path) -> dict[str, str]:
    """A login's environment: a HOME of its own, no s25rbl settings, this checkout's code."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "PYTHON": sys.executable,  # bootstrap.sh checks this interpreter's version
        "PYTHONUNBUFFERED": "1",
    }
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


@contextlib.contextmanager
def reader_machine(mode: str) -> Iterator[tuple[NetNamespace, Path, dict[str, str]]]:
    """A namespace with the resolver ``mode`` says, a scratch checkout, and the reader's env."""
    check_netns_support()
    for program in ("dig", "curl", "bash"):
        require_program(program)
    cleanup_stale()
    tag = f"{PREFIX}{os.getpid()}-tour-{mode}"
    with contextlib.ExitStack() as stack:
        reaper = start_reaper()
        stack.callback(reaper.wait, 10)
        stack.callback(reaper.terminate)
        root = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir="/var/tmp"))
        stack.callback(shutil.rmtree, root, True)
        ns = NetNamespace(tag)
        stack.callback(ns.delete)
        ns.create()
        ns.set_resolv_conf(f"# the README tour, {mode}\nnameserver {RESOLVER}\n")
        if Path("/etc/s25rbl").exists():  # a deployed node's configuration must not leak in
            (ns.etc / "s25rbl").mkdir()
        if mode == "online":
            internet = FakeAuthority(host=RESOLVER, port=53)  # knows no documentation address
            with ns.entered():
                internet.start()
            stack.callback(internet.stop)
        home = root / "home"
        home.mkdir()
        yield ns, scratch_checkout(root), reader_env(home)


def start_serve_sh(ns: NetNamespace, checkout: Path, env: dict[str, str]) -> RunningServer:
    process = subprocess.Popen(
        ns.argv(str(checkout / "scripts" / "serve.sh")),
        cwd=checkout,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return attach(process, checkout / "(no configuration)", env, timeout=60)


# --------------------------------------------------------------------------------- tests


def test_the_readme_has_a_tour_with_every_answer() -> None:
    steps = tour_steps(README.read_text(encoding="utf-8"))
    assert len(steps) >= 20, [s.command for s in steps]
    expected = " ".join(text for step in steps for _, text in step.expect)
    # The tour shows each kind of answer a newcomer meets, with and without a resolver.
    for shown in ("127.0.0.2", "status: NXDOMAIN", "[r1]", "domain check", "listed 127.0.0.4"):
        assert shown in expected, shown
    assert any("127.0.0.5" in text for step in steps for when, text in step.expect if when == "offline")
    heredoc = [step for step in steps if "<<'EOF'" in step.command]
    assert heredoc and heredoc[0].command.endswith("\nEOF"), "the import's table is one step"


def test_a_wrong_expectation_is_reported() -> None:
    """The comparison is not vacuous: order, presence and whitespace are what they claim."""
    output = 'p1: listed 127.0.0.2  "S25R check"\n  rule:     r1\n'
    assert missing(output, ["listed 127.0.0.2", "rule: r1"]) is None
    assert missing(output, ["rule: r1", "listed 127.0.0.2"]) == "listed 127.0.0.2"
    assert missing(output, ["listed 127.0.0.4"]) == "listed 127.0.0.4"
    assert missing('{"a": 1, "b": 2}', ['"a": 1', '"b": 2']) is None  # one JSON line, two parts
    assert missing('{"a": 1, "b": 2}', ['"b": 2', '"a": 1']) == '"a": 1'
    steps = _block_steps(1, ["echo a \\", "  b", "# → a b", "# offline → c", "true"])
    assert [s.command for s in steps] == ["echo a \\\n  b", "true"]
    assert steps[0].expected("online") == ["a b"] and steps[0].expected("offline") == ["a b", "c"]


@pytest.fixture(params=MODES)
def machine(request: pytest.FixtureRequest) -> Iterator[tuple[str, NetNamespace, Path, dict[str, str]]]:
    mode: str = request.param
    try:
        with reader_machine(mode) as (ns, checkout, env):
            yield mode, ns, checkout, env
    except LabUnavailable as err:
        message = f"the README tour cannot run here: {err}"
        if os.environ.get("S25RBL_CI"):
            pytest.fail(f"{message} (S25RBL_CI is set: CI must not skip)")
        pytest.skip(message)


def test_the_readme_tour_prints_what_it_says(machine: tuple[str, NetNamespace, Path, dict[str, str]]) -> None:
    mode, ns, checkout, env = machine
    text = README.read_text(encoding="utf-8")
    server = start_serve_sh(ns, checkout, env)
    shell = Shell(ns, checkout, env, checkout.parent)
    try:
        banner = [line.replace(README_HOME, env["HOME"]) for line in banner_lines(text)]

        def shown() -> bool:
            printed = {line.rstrip("\n") for line in server.output}
            return all(line in printed for line in banner)

        if not _eventually(shown, 10):
            printed = "".join(server.output)
            lacking = [line for line in banner if line not in printed.splitlines()]
            raise AssertionError(f"the banner lacks {lacking}; serve.sh printed:\n{printed}")
        for step in tour_steps(text):
            _run_step(shell, step, mode, server)
    finally:
        shell.close()
        server.stop()


def _eventually(probe: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not probe():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _run_step(shell: Shell, step: Step, mode: str, server: RunningServer) -> None:
    expected = step.expected(mode)
    deadline = time.monotonic() + DIG_RETRY_SECONDS
    while True:
        status, output = shell.run(step.command)
        gone = missing(output, expected)
        if status == 0 and gone is None:
            return
        if not step.command.startswith("dig ") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    problem = f"exit status {status}" if status else f"no line with {gone!r}"
    raise AssertionError(
        f"README.md:{step.line} ({mode}): {problem}\n$ {step.command}\n{output}"
        f"--- server output tail:\n{''.join(server.output[-30:])}"
    )
