"""The real ``s25rbl report-maillog`` as a child process, against real HTTP endpoints.

Most tests use a small aiohttp fake of ``POST /v1/reports`` (idempotency by key, 202 with
counts) that can answer 503 or refuse connections for a while, so outages are exact; the last
ones send to a real ``s25rbl serve`` and see the address learned from the retries.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from s25rbl.reporter.parse import idempotency_key
from tests.integration.api_client import Api
from tests.integration.conftest import DYNAMIC
from tests.integration.server import RunningServer, start_server, write_config
from tests.support.fakedns import FakeAuthority

TOKEN = "test-report-token"
WINDOW = timedelta(hours=48)


# --- the fake API ---------------------------------------------------------------------------


class FakeReportsApi:
    """``POST /v1/reports`` per the contract, on 127.0.0.1, in a thread of its own.

    ``mode``: "ok" answers; "503" answers 503 problem+json; ``down()`` closes the listening
    socket (connection refused) until ``up()``.
    """

    def __init__(self) -> None:
        self.mode = "ok"
        self.lock = threading.Lock()
        self.received: Counter[str] = Counter()  # idempotency key -> times received
        self.stored: dict[str, dict[str, Any]] = {}
        self.duplicates = 0
        self.refused = 0
        self.unavailable = 0
        self.requests = 0
        self.batch_sizes: list[int] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def start(self) -> None:
        self._thread.start()
        self._call(self._start())

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/reports", self._reports)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await self._listen()

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()
        if not self.port:
            server = self._site._server
            assert isinstance(server, asyncio.base_events.Server)
            self.port = server.sockets[0].getsockname()[1]

    def down(self) -> None:
        async def stop() -> None:
            assert self._site is not None
            await self._site.stop()

        self._call(stop())

    def up(self) -> None:
        self.mode = "ok"
        self._call(self._listen())

    def stop(self) -> None:
        if self._runner is not None:
            self._call(self._runner.cleanup())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def accepted_keys(self) -> set[str]:
        with self.lock:
            return set(self.stored)

    async def _reports(self, request: web.Request) -> web.Response:
        with self.lock:
            self.requests += 1
            if self.mode == "503":
                self.unavailable += 1
                return _problem(503, "the store is unavailable")
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return _problem(401, "no or bad token")
        if request.content_type != "application/json":
            return _problem(415, "use application/json")
        body = await request.json()
        items = body.get("reports") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            return _problem(422, "reports: must be a non-empty array")
        if len(items) > 1000:
            return _problem(413, "at most 1000 reports per request")
        result: dict[str, Any] = {"accepted": 0, "duplicate": 0, "refused": 0, "errors": []}
        now = datetime.now(UTC)
        with self.lock:
            self.batch_sizes.append(len(items))
            for index, report in enumerate(items):
                fields = {
                    "client_ip",
                    "client_name",
                    "helo",
                    "sender",
                    "recipient",
                    "time",
                    "idempotency_key",
                }
                if set(report) != fields:
                    return _problem(422, f"reports[{index}]: fields {sorted(report)}")
                key = report["idempotency_key"]
                self.received[key] += 1
                when = datetime.fromisoformat(report["time"])
                if when.tzinfo is None or when < now - WINDOW or when > now + timedelta(minutes=5):
                    self.refused += 1
                    result["refused"] += 1
                    result["errors"].append(
                        {"index": index, "field": "time", "problem": "outside the window"}
                    )
                elif key in self.stored:
                    self.duplicates += 1
                    result["duplicate"] += 1
                else:
                    self.stored[key] = report
                    result["accepted"] += 1
        return web.json_response(result, status=202)


def _problem(status: int, detail: str) -> web.Response:
    return web.json_response(
        {"type": "about:blank", "title": detail, "status": status, "detail": detail},
        status=status,
        content_type="application/problem+json",
    )


@pytest.fixture
def api() -> Iterator[FakeReportsApi]:
    fake = FakeReportsApi()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


# --- log lines ------------------------------------------------------------------------------


def stamp(when: datetime, classic: bool) -> str:
    """Classic syslog (UTC: the reporter runs with --utc) or RFC 3339 with microseconds."""
    when = when.astimezone(UTC)
    if classic:
        return f"{when:%b} {when.day:>2} {when:%H:%M:%S}"
    return when.isoformat(timespec="microseconds")


def rejection(n: int, when: datetime | None = None, zone: str = "bl.s25rbl.test") -> str:
    when = when or datetime.now(UTC) - timedelta(minutes=10)
    ip = f"192.0.2.{n % 250 + 1}"
    name = f"p{n}-pool.example.net" if n % 3 else "unknown"
    sender = f"s{n}@example.org" if n % 5 else ""
    return (
        f"{stamp(when, n % 2 == 0)} mx1 postfix/smtpd[{10000 + n}]: NOQUEUE: reject: RCPT from {name}[{ip}]: "
        f"450 4.7.1 Service unavailable; Client host [{ip}] blocked using {zone}; "
        f"S25R check, be patient [r1]; from=<{sender}> to=<user{n}@example.test> proto=ESMTP helo=<{name}>"
    )


def noise(n: int) -> list[str]:
    t = stamp(datetime.now(UTC) - timedelta(minutes=10), n % 2 == 0)
    ip = f"198.51.100.{n % 250 + 1}"
    return [
        f"{t} mx1 postfix/smtpd[{20000 + n}]: connect from unknown[{ip}]",
        f"{t} mx1 postfix/smtpd[{20000 + n}]: NOQUEUE: reject: RCPT from unknown[{ip}]: 554 5.7.1 Service "
        f"unavailable; Client host [{ip}] blocked using zen.spamhaus.org; listed; from=<a@b.example> "
        "to=<x@example.test> proto=ESMTP helo=<bot>",
        f"{t} mx1 postfix/smtpd[{20000 + n}]: NOQUEUE: reject: RCPT from unknown[{ip}]: 554 5.7.1 Service "
        f"unavailable; Client host [{ip}] blocked using bl.s25rbl.test; S25R check, be patient [r1]; "
        "from=<a@b.example> to=<x@example.test> proto=ESMTP helo=<bot>",
        f"{t} mx1 postfix/postscreen[{30000 + n}]: PASS NEW [{ip}]:{40000 + n}",
        f"garbage line {n} \t\x01",
        f"{t} mx1 postfix/smtpd[{20000 + n}]: disconnect from unknown[{ip}] ehlo=1 mail=1 rcpt=0/1 "
        "commands=2/3",
    ]


def keys(lines: list[str]) -> set[str]:
    return {idempotency_key(line.encode()) for line in lines}


def append(path: Path, lines: list[str]) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write("".join(line + "\n" for line in lines))
        fh.flush()


def interleave(rejections: list[str], start: int = 0) -> list[str]:
    out: list[str] = []
    for i, line in enumerate(rejections):
        out.append(line)
        if i % 2 == 0:
            out.extend(noise(start + i))
    return out


# --- running the reporter -------------------------------------------------------------------


def require_cli_command() -> None:
    from s25rbl.cli.parser import build_parser, subcommands

    if "report-maillog" not in subcommands(build_parser()):
        pytest.fail(
            "s25rbl.cli.build_parser() does not register report-maillog: "
            "call s25rbl.cli.report_maillog.add_parser"
        )


@pytest.fixture
def config(tmp_path: Path) -> Path:
    require_cli_command()
    path = tmp_path / "reporter.toml"
    path.write_text(
        f"""
[dns]
zone = "bl.s25rbl.test"
hostname_zone = "hl.s25rbl.test"
nameservers = ["ns1.s25rbl.test"]

[resolver]
upstreams = ["127.0.0.1:53"]

[database]
url = "sqlite:///{tmp_path / "unused.db"}"
"""
    )
    return path


def reporter_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("S25RBL_")}
    env.update(PYTHONUNBUFFERED="1", TZ="UTC", XDG_STATE_HOME=str(tmp_path / "xdg-state"))
    return env


def reporter_args(config: Path, api_url: str, log: Path | str, *extra: str, token: str = TOKEN) -> list[str]:
    return [
        sys.executable,
        "-m",
        "s25rbl",
        "--config",
        str(config),
        "report-maillog",
        "--api",
        api_url,
        "--token",
        token,
        "--utc",
        *extra,
        str(log),
    ]


def run_once(
    config: Path, api_url: str, log: Path | str, *extra: str, token: str = TOKEN, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        reporter_args(config, api_url, log, *extra, token=token),
        capture_output=True,
        text=True,
        env=reporter_env(Path(config).parent),
        input=input,
        timeout=60,
    )


class Follower:
    """``report-maillog --follow`` in the background, its stderr in a file."""

    def __init__(self, config: Path, api_url: str, log: Path, *extra: str) -> None:
        self.err_path = config.parent / f"follower-{time.monotonic_ns()}.err"
        self._err = self.err_path.open("w")
        self.process = subprocess.Popen(
            reporter_args(config, api_url, log, "--follow", "--poll", "0.05", "--interval", "0.2", *extra),
            stdout=subprocess.DEVNULL,
            stderr=self._err,
            env=reporter_env(config.parent),
        )

    def stderr(self) -> str:
        return self.err_path.read_text()

    def stop(self, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"report-maillog did not stop within {timeout} s:\n{self.stderr()}"
            ) from None
        finally:
            self._err.close()
        return code


@pytest.fixture
def followers() -> Iterator[list[Follower]]:
    started: list[Follower] = []
    yield started
    for follower in started:
        if follower.process.poll() is None:
            follower.process.kill()
            follower.process.wait()


def wait_for(
    what: str, predicate: Callable[[], bool], timeout: float = 20, follower: Follower | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if follower is not None and follower.process.poll() is not None:
            raise AssertionError(f"report-maillog exited {follower.process.returncode}:\n{follower.stderr()}")
        time.sleep(0.05)
    detail = f"\n{follower.stderr()}" if follower is not None else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{detail}")


def assert_exactly_once(api: FakeReportsApi, expected: set[str]) -> None:
    with api.lock:
        received = dict(api.received)
    assert set(received) == expected, (
        f"missing {len(expected - set(received))}, unexpected {len(set(received) - expected)}"
    )
    assert all(count == 1 for count in received.values()), {k: c for k, c in received.items() if c != 1}
    assert api.duplicates == 0


# --- against the fake API -------------------------------------------------------------------


def test_each_rejection_is_sent_exactly_once_among_noise(
    tmp_path: Path, config: Path, api: FakeReportsApi
) -> None:
    log = tmp_path / "mail.log"
    first = [rejection(n) for n in range(30)]
    old = rejection(99, when=datetime.now(UTC) - timedelta(days=3))  # outside the retry window
    append(log, [*interleave(first), old])
    state = ["--state", str(tmp_path / "state"), "--batch", "7"]

    done = run_once(config, api.url, log, *state)
    assert done.returncode == 0, done.stderr
    assert_exactly_once(api, keys([*first, old]))
    assert api.accepted_keys() == keys(first) and api.refused == 1
    assert max(api.batch_sizes) <= 7
    summary = done.stderr.strip().splitlines()[-1]
    assert "31 rejections reported (30 accepted, 0 duplicate, 1 refused)" in summary, done.stderr
    assert "15 ignored 5xx, 15 not ours, 45 not rejections, 15 unparsable" in summary, done.stderr

    # Again: the state says it is all done; nothing is sent.
    requests = api.requests
    again = run_once(config, api.url, log, *state)
    assert again.returncode == 0, again.stderr
    assert api.requests == requests
    assert "0 lines" in again.stderr

    # New lines: only those.
    more = [rejection(n) for n in range(100, 105)]
    append(log, interleave(more, 100))
    third = run_once(config, api.url, log, *state)
    assert third.returncode == 0, third.stderr
    assert_exactly_once(api, keys([*first, old, *more]))
    assert "5 rejections reported (5 accepted, 0 duplicate, 0 refused)" in third.stderr


def test_without_the_state_file_idempotency_absorbs_the_resend(
    tmp_path: Path, config: Path, api: FakeReportsApi
) -> None:
    log = tmp_path / "mail.log"
    lines = [rejection(n) for n in range(12)]
    append(log, interleave(lines))
    assert run_once(config, api.url, log, "--state", str(tmp_path / "a")).returncode == 0
    lost = run_once(config, api.url, log, "--state", str(tmp_path / "b"))  # as if the state were lost
    assert lost.returncode == 0, lost.stderr
    assert "12 rejections reported (0 accepted, 12 duplicate, 0 refused)" in lost.stderr
    assert api.accepted_keys() == keys(lines) and api.duplicates == 12


def test_follow_survives_rotation_by_rename_and_by_truncation(
    tmp_path: Path, config: Path, api: FakeReportsApi, followers: list[Follower]
) -> None:
    log = tmp_path / "mail.log"
    append(log, noise(0))
    follower = Follower(config, api.url, log, "--state", str(tmp_path / "state"))
    followers.append(follower)
    sent: list[str] = []

    def write(lines: list[str], path: Path = log) -> None:
        append(path, interleave(lines, len(sent)))
        sent.extend(lines)

    def all_arrived() -> bool:
        return api.accepted_keys() == keys(sent)

    write([rejection(n) for n in range(5)])
    wait_for("the first lines", all_arrived, follower=follower)

    # logrotate "create": rename, new file; the logger writes to the old file until it reopens.
    log.rename(tmp_path / "mail.log.1")
    write([rejection(n) for n in range(5, 7)], tmp_path / "mail.log.1")
    log.touch()
    write([rejection(n) for n in range(7, 12)])
    write([rejection(12)], tmp_path / "mail.log.1")  # a last late line in the old file
    wait_for("the lines of both files", all_arrived, follower=follower)

    # logrotate "copytruncate": copy, then truncate in place; the new content is shorter.
    shutil.copy(log, tmp_path / "mail.log.2")
    with log.open("r+b") as fh:
        fh.truncate(0)
    time.sleep(0.3)
    write([rejection(n) for n in range(13, 15)])
    wait_for("the lines after truncation", all_arrived, follower=follower)

    assert follower.stop() == 0
    assert_exactly_once(api, keys(sent))
    err = follower.stderr()
    assert "rotated" in err and "truncated" in err, err
    assert "15 rejections reported (15 accepted, 0 duplicate, 0 refused)" in err.splitlines()[-1], err


def test_api_outage_backs_off_and_then_delivers_everything_once(
    tmp_path: Path, config: Path, api: FakeReportsApi, followers: list[Follower]
) -> None:
    log = tmp_path / "mail.log"
    log.touch()
    api.mode = "503"
    follower = Follower(config, api.url, log, "--state", str(tmp_path / "state"), "--backoff-max", "2")
    followers.append(follower)
    lines = [rejection(n) for n in range(10)]
    append(log, interleave(lines))
    wait_for("two 503 answers", lambda: api.unavailable >= 2, follower=follower)

    api.down()  # connection refused
    refused_before = follower.stderr().count("Connection refused")
    wait_for("a refused connection", lambda: follower.stderr().count("Connection refused") > refused_before)
    more = [rejection(n) for n in range(10, 20)]
    append(log, interleave(more, 10))  # written during the outage
    time.sleep(1)
    assert api.accepted_keys() == set()

    api.up()
    wait_for("every report", lambda: api.accepted_keys() == keys(lines + more), timeout=30, follower=follower)
    assert follower.stop() == 0
    assert_exactly_once(api, keys(lines + more))
    err = follower.stderr()
    assert "503" in err and "API available again" in err, err
    assert "20 rejections reported (20 accepted, 0 duplicate, 0 refused)" in err.splitlines()[-1], err


def test_restart_resumes_from_the_state_file_across_rotation(
    tmp_path: Path, config: Path, api: FakeReportsApi, followers: list[Follower]
) -> None:
    log = tmp_path / "mail.log"
    state = ["--state", str(tmp_path / "state")]
    first = [rejection(n) for n in range(6)]
    append(log, interleave(first))
    follower = Follower(config, api.url, log, *state)
    followers.append(follower)
    wait_for("the first lines", lambda: api.accepted_keys() == keys(first), follower=follower)
    assert follower.stop() == 0

    # While it is stopped: more lines, then rotation.
    late = [rejection(n) for n in range(6, 9)]
    append(log, interleave(late, 6))
    log.rename(tmp_path / "mail.log.1")
    fresh = [rejection(n) for n in range(9, 12)]
    append(log, interleave(fresh, 9))

    second = Follower(config, api.url, log, *state)
    followers.append(second)
    everything = keys(first + late + fresh)
    wait_for("the rest", lambda: api.accepted_keys() == everything, follower=second)
    assert second.stop() == 0
    assert_exactly_once(api, everything)  # the state was written: no duplicates at all
    assert "rotated while stopped" in second.stderr()


def test_sigterm_during_an_outage_exits_promptly_and_loses_nothing(
    tmp_path: Path, config: Path, api: FakeReportsApi, followers: list[Follower]
) -> None:
    log = tmp_path / "mail.log"
    state = ["--state", str(tmp_path / "state")]
    lines = [rejection(n) for n in range(3)]
    append(log, interleave(lines))
    api.down()
    follower = Follower(config, api.url, log, *state)
    followers.append(follower)
    # A batch refused, not the question about the zones at start (refused too, and earlier).
    wait_for("a refused batch", lambda: "reports wait" in follower.stderr(), follower=follower)
    started = time.monotonic()
    assert follower.stop() == 0
    assert time.monotonic() - started < 12
    assert "3 unsent" in follower.stderr().splitlines()[-1], follower.stderr()

    api.up()
    done = run_once(config, api.url, log, *state)
    assert done.returncode == 0, done.stderr
    assert_exactly_once(api, keys(lines))


def test_standard_input(tmp_path: Path, config: Path, api: FakeReportsApi) -> None:
    lines = [rejection(n) for n in range(4)]
    done = run_once(config, api.url, "-", input="".join(line + "\n" for line in interleave(lines)))
    assert done.returncode == 0, done.stderr
    assert_exactly_once(api, keys(lines))


def test_bad_token_or_missing_token_is_a_configuration_error(
    tmp_path: Path, config: Path, api: FakeReportsApi
) -> None:
    log = tmp_path / "mail.log"
    append(log, [rejection(1)])
    bad = run_once(config, api.url, log, "--state", str(tmp_path / "state"), token="wrong")
    assert bad.returncode == 1, bad.stderr
    assert "refused the token" in bad.stderr
    missing = run_once(config, api.url, log, "--state", str(tmp_path / "state"), token="")
    assert missing.returncode == 2, missing.stderr
    assert "needs an API token" in missing.stderr


# --- --from-end -----------------------------------------------------------------------------


def saved_offset(state: Path, log: Path) -> int | None:
    """The offset the state file holds for ``log``, if any (it is replaced atomically)."""
    try:
        data = json.loads(state.read_text())
    except FileNotFoundError:
        return None
    entry = data["files"].get(str(log))
    return int(entry["offset"]) if entry else None


def test_from_end_reports_only_lines_written_after_the_start(
    tmp_path: Path, config: Path, api: FakeReportsApi, followers: list[Follower]
) -> None:
    log = tmp_path / "mail.log"
    old = [rejection(n) for n in range(5)]
    append(log, interleave(old))
    state = tmp_path / "state"
    follower = Follower(config, api.url, log, "--state", str(state), "--from-end")
    followers.append(follower)
    end = log.stat().st_size
    wait_for("the end saved as the position", lambda: saved_offset(state, log) == end, follower=follower)

    new = [rejection(n) for n in range(5, 9)]
    append(log, interleave(new, 5))
    wait_for("the new lines", lambda: api.accepted_keys() == keys(new), follower=follower)
    assert follower.stop() == 0
    assert_exactly_once(api, keys(new))  # none of the old ones, ever
    err = follower.stderr()
    assert "starting at its end" in err, err
    assert "4 rejections reported (4 accepted, 0 duplicate, 0 refused)" in err.splitlines()[-1], err


def test_from_end_without_follow_saves_the_end_for_a_later_plain_run(
    tmp_path: Path, config: Path, api: FakeReportsApi
) -> None:
    log = tmp_path / "mail.log"
    old = [rejection(n) for n in range(6)]
    append(log, interleave(old))
    state = ["--state", str(tmp_path / "state")]

    done = run_once(config, api.url, log, *state, "--from-end")
    assert done.returncode == 0, done.stderr
    assert "0 lines" in done.stderr.strip().splitlines()[-1], done.stderr
    assert api.requests == 0
    assert saved_offset(tmp_path / "state", log) == log.stat().st_size

    new = [rejection(n) for n in range(6, 9)]
    append(log, interleave(new, 6))
    later = run_once(config, api.url, log, *state)  # without --from-end: resumes at that end
    assert later.returncode == 0, later.stderr
    assert_exactly_once(api, keys(new))
    assert "3 rejections reported (3 accepted, 0 duplicate, 0 refused)" in later.stderr, later.stderr


def test_a_saved_position_wins_over_from_end(tmp_path: Path, config: Path, api: FakeReportsApi) -> None:
    log = tmp_path / "mail.log"
    first = [rejection(n) for n in range(4)]
    append(log, interleave(first))
    state = ["--state", str(tmp_path / "state")]
    assert run_once(config, api.url, log, *state).returncode == 0

    more = [rejection(n) for n in range(4, 8)]  # written while no reporter ran
    append(log, interleave(more, 4))
    done = run_once(config, api.url, log, *state, "--from-end")
    assert done.returncode == 0, done.stderr
    assert "4 rejections reported (4 accepted, 0 duplicate, 0 refused)" in done.stderr, done.stderr
    assert_exactly_once(api, keys(first + more))


def test_from_end_with_standard_input_is_refused(tmp_path: Path, config: Path, api: FakeReportsApi) -> None:
    done = run_once(config, api.url, "-", "--from-end", input=rejection(1) + "\n")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--from-end" in lines[0] and "standard input" in lines[0], done.stderr
    assert api.requests == 0


# --- against the real server ----------------------------------------------------------------


@pytest.fixture
def quick_server(tmp_path: Path, upstream: FakeAuthority, database_url: str) -> Iterator[RunningServer]:
    """A node that counts retries 1 s apart (``min_interval``), so a test need not wait minutes."""
    extra = "\n[learning]\nmin_interval = 1\n"
    config = write_config(tmp_path / "quick.toml", (upstream.host, upstream.port), database_url, extra)
    running = start_server(config)
    try:
        yield running
    finally:
        running.stop()


def test_reports_reach_the_real_server_and_an_mta_that_retries_is_learned(
    tmp_path: Path, quick_server: RunningServer
) -> None:
    server = quick_server
    require_cli_command()
    created = server.cli("token", "create", "--name", "mx1", "--scope", "report")
    assert created.returncode == 0, created.stderr
    report_token = created.stdout.strip()
    reader = server.cli("token", "create", "--name", "ops", "--scope", "read")
    assert reader.returncode == 0, reader.stderr
    assert server.api is not None
    host, port = server.api
    api_url = f"http://{host}:{port}"

    ip, name = DYNAMIC
    log = tmp_path / "mail.log"
    args = ["--state", str(tmp_path / "reporter.state")]
    # A real MTA: the first try and two retries, each logged and reported as it happens (a
    # retry counts by when s25rbl receives its report, so a backlog sent at once is one try).
    for i in range(3):
        if i:
            time.sleep(1.2)
        when = stamp(datetime.now(UTC), i % 2 == 0)
        attempt = (
            f"{when} mx1 postfix/smtpd[{500 + i}]: NOQUEUE: reject: RCPT from {name}[{ip}]: 450 4.7.1 "
            f"Service unavailable; Client host [{ip}] blocked using bl.s25rbl.test; "
            "S25R check, be patient [r1]; "
            f"from=<prvs=00{i}abc=news@example.org> to=<User@Example.test> proto=ESMTP helo=<{name}>"
        )
        append(log, interleave([attempt], start=10 * i) + ([rejection(7)] if i == 2 else []))
        done = run_once(server.config, api_url, log, *args, token=report_token)
        assert done.returncode == 0, done.stderr
        sent = 2 if i == 2 else 1  # the last run also sends a bot that never retries
        assert f"{sent} rejections reported ({sent} accepted, 0 duplicate, 0 refused)" in done.stderr, (
            done.stderr
        )

    learned = Api(host, port, reader.stdout.strip()).get("/v1/learned")
    assert learned.status == 200, learned.body
    items = {item["value"]: item for item in learned.json["items"]}
    assert ip in items, learned.json
    assert len(items[ip]["evidence"]) == 3
    assert "192.0.2.8" not in items

    # The state lost: the server's idempotency keys absorb the second sending.
    again = run_once(
        server.config, api_url, log, "--state", str(tmp_path / "other.state"), token=report_token
    )
    assert again.returncode == 0, again.stderr
    assert "4 rejections reported (0 accepted, 4 duplicate, 0 refused)" in again.stderr, again.stderr
