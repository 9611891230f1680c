"""The log reporter's loop: batches, outages, refused batches, and a state file that only moves
past what is done."""

from __future__ import annotations

import io
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from s25rbl.errors import BatchRefused, ReporterError, ReportsDeferred
from s25rbl.reporter.logfile import LogFile
from s25rbl.reporter.parse import Kind, LineParser, idempotency_key
from s25rbl.reporter.run import Options, Reporter
from s25rbl.reporter.sources import FileSource, StdinSource
from s25rbl.reporter.state import StateFile
from tests.unit.reporter.samples import REAL_BL, saved_position

ZONES = ("bl.s25rbl.test", "hl.s25rbl.test")
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def parser(now: datetime = NOW, tz: Any = UTC) -> LineParser:
    return LineParser(ZONES, tz=tz, now=lambda: now)


# --- the send loop --------------------------------------------------------------------------


class FakeClient:
    """Answers like the API; ``script`` items are raised (an exception) before answering."""

    timeout = 1.0

    def __init__(self, script: list[Exception] | None = None) -> None:
        self.script = list(script or [])
        self.keys: list[str] = []
        self.batches: list[int] = []
        self.on_send: Any = None

    def send(self, reports: list[dict[str, str]], timeout: float | None = None) -> dict[str, Any]:
        if self.on_send is not None:
            self.on_send()
        if self.script:
            raise self.script.pop(0)
        self.batches.append(len(reports))
        new = [r["idempotency_key"] for r in reports if r["idempotency_key"] not in self.keys]
        self.keys.extend(new)
        return {"accepted": len(new), "duplicate": len(reports) - len(new), "refused": 0, "errors": []}


def reject_line(n: int) -> str:
    return REAL_BL.replace("smtpd[9806]", f"smtpd[{n}]")


def run_reporter(
    tmp_path: Path,
    client: Any,
    lines: list[str],
    *,
    batch: int = 500,
    state: StateFile | None = None,
    from_end: bool = False,
) -> tuple[Reporter, str]:
    log = tmp_path / "mail.log"
    if not log.exists():
        log.write_text("".join(line + "\n" for line in lines))
    own_state = state is None
    state = state or StateFile(tmp_path / "state")
    if own_state:
        state.open()
    logfile = LogFile(str(log), follow=False)
    logfile.start(state.get(str(log)), from_end=from_end)
    out = io.StringIO()
    reporter = Reporter(
        parser(),
        client,
        FileSource(logfile),
        state,
        str(log),
        Options(batch=batch, backoff_min=0.01, backoff_max=0.02, interval=60),
        threading.Event(),
        out,
    )
    try:
        assert reporter.run() == 0
    finally:
        logfile.close()
        if own_state:
            state.close()
    return reporter, out.getvalue()


def test_batches_counts_and_summary(tmp_path: Path) -> None:
    lines = [reject_line(n) for n in range(7)] + [
        "Nov 23 22:00:29 mx postfix/smtpd[1]: connect from x[192.0.2.1]"
    ]
    client = FakeClient()
    _, out = run_reporter(tmp_path, client, lines, batch=3)
    assert client.batches == [3, 3, 1]
    assert len(set(client.keys)) == 7
    assert "8 lines: 7 rejections reported (7 accepted, 0 duplicate, 0 refused)" in out
    assert "1 not rejections" in out


def test_a_line_with_an_impossible_time_is_counted_and_its_neighbours_sent(tmp_path: Path) -> None:
    # Past year 9999 once in UTC: it used to stop the reporter on every start, and the good
    # line before it was never sent.
    bad = reject_line(2).replace("Nov 23 22:00:29", "9999-12-31T23:59:59-23:59")
    client = FakeClient()
    reporter, out = run_reporter(tmp_path, client, [reject_line(1), bad, reject_line(3)], batch=1)
    assert client.batches == [1, 1]
    assert reporter.counts.kinds[Kind.UNPARSABLE] == 1
    assert "3 lines: 2 rejections reported (2 accepted" in out and "1 unparsable" in out


def test_a_line_the_parser_cannot_handle_is_counted_never_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = FakeClient()
    lines = [reject_line(1), reject_line(2), reject_line(3)]

    class Fragile(LineParser):
        def parse(self, raw: bytes) -> Any:
            if b"smtpd[2]" in raw:
                raise RuntimeError("a bug in the parser")
            return super().parse(raw)

    log = tmp_path / "mail.log"
    log.write_text("".join(line + "\n" for line in lines))
    logfile = LogFile(str(log), follow=False)
    logfile.start(None)
    reporter = Reporter(
        Fragile(ZONES, tz=UTC, now=lambda: NOW),
        client,
        FileSource(logfile),
        None,
        str(log),
        Options(batch=1, interval=60),
        threading.Event(),
        io.StringIO(),
    )
    try:
        assert reporter.run() == 0
    finally:
        logfile.close()
    assert client.batches == [1, 1]
    assert reporter.counts.kinds[Kind.UNPARSABLE] == 1
    assert "a bug in the parser" in caplog.text


def test_outage_retries_the_same_batch_until_accepted(tmp_path: Path) -> None:
    client = FakeClient(
        [ReportsDeferred("503"), ReportsDeferred("refused"), ReportsDeferred("503", retry_after=0.01)]
    )
    reporter, _ = run_reporter(tmp_path, client, [reject_line(n) for n in range(4)], batch=10)
    assert client.batches == [4] and len(client.keys) == 4
    assert reporter.counts.accepted == 4


def test_a_malformed_batch_is_logged_and_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    client = FakeClient([BatchRefused("422 time: bad")])
    reporter, out = run_reporter(tmp_path, client, [reject_line(n) for n in range(3)], batch=2)
    assert client.batches == [1]  # the first batch of 2 was skipped, the rest sent
    assert reporter.counts.dropped == 2
    assert "2 dropped" in out and "this is a bug" in caplog.text


def test_a_bad_token_is_fatal(tmp_path: Path) -> None:
    client = FakeClient([ReporterError("401 bad token")])
    with pytest.raises(ReporterError):
        run_reporter(tmp_path, client, [reject_line(1)])


def test_the_state_advances_only_past_accepted_reports(tmp_path: Path) -> None:
    lines = [reject_line(n) for n in range(6)]
    state = StateFile(tmp_path / "state")
    state.open()
    saved: list[int] = []
    client = FakeClient()
    log = tmp_path / "mail.log"

    def record() -> None:
        position = state.get(str(log))
        saved.append(position.offset if position else 0)

    client.on_send = record
    try:
        run_reporter(tmp_path, client, lines, batch=2, state=state)
        # Before each send the state is where the previous batch ended.
        line_length = len(lines[0]) + 1
        assert saved == [0, 2 * line_length, 4 * line_length]
        final = state.get(str(log))
        assert final is not None and final.offset == log.stat().st_size
        # A second run over the same file sends nothing.
        again = FakeClient()
        run_reporter(tmp_path, again, lines, state=state)
        assert again.batches == []
    finally:
        state.close()


def test_from_end_then_a_reporter_saves_the_end_and_a_later_run_resumes_there(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    old = [reject_line(n) for n in range(3)]
    log.write_text("".join(line + "\n" for line in old))
    state = StateFile(tmp_path / "state")
    state.open()
    try:
        client = FakeClient()
        reporter, _ = run_reporter(tmp_path, client, [], state=state, from_end=True)
        assert client.batches == [] and reporter.counts.lines == 0
        saved = state.get(str(log))
        assert saved is not None and saved.offset == log.stat().st_size
        new = [reject_line(n) for n in range(10, 12)]
        with log.open("a") as fh:
            fh.write("".join(line + "\n" for line in new))
        later = FakeClient()
        run_reporter(tmp_path, later, [], state=state)  # without from_end: resumes at the end
        assert later.keys == [idempotency_key(line.encode()) for line in new]
    finally:
        state.close()


def test_stop_during_an_outage_keeps_the_state_before_the_batch(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_text("".join(reject_line(n) + "\n" for n in range(3)))
    state = StateFile(tmp_path / "state")
    state.open()
    stop = threading.Event()
    client = FakeClient([ReportsDeferred("down")] * 1000)
    client.on_send = lambda: stop.set() if len(client.script) < 995 else None
    logfile = LogFile(str(log), follow=True, rotate_quiet=0.05)
    logfile.start(None)
    out = io.StringIO()
    options = Options(
        batch=500, interval=0.05, poll=0.01, follow=True, backoff_min=0.01, backoff_max=0.02, grace=0.2
    )
    reporter = Reporter(parser(), client, FileSource(logfile), state, str(log), options, stop, out)
    started = time.monotonic()
    try:
        assert reporter.run() == 0
    finally:
        logfile.close()
        state.close()
    assert time.monotonic() - started < 5
    assert "3 unsent" in out.getvalue()
    assert state.get(str(log)) is None  # nothing was accepted: nothing recorded as done


def test_stdin_source_reads_lines_and_ends(tmp_path: Path) -> None:
    data = io.BytesIO(("\n".join(reject_line(n) for n in range(3)) + "\nlast-no-newline").encode())
    source = StdinSource(data)
    client = FakeClient()
    reporter = Reporter(
        parser(), client, source, None, "-", Options(poll=0.01), threading.Event(), io.StringIO()
    )
    assert reporter.run() == 0
    assert len(client.keys) == 3
    assert reporter.counts.lines == 4 and reporter.counts.kinds[Kind.UNPARSABLE] == 1


def test_os_level_offsets_match_the_file(tmp_path: Path) -> None:
    # The saved position names the file by device and inode, as os.stat does.
    log = tmp_path / "mail.log"
    log.write_bytes(b"1\n")
    position = saved_position(log, 1)
    st = os.stat(log)
    assert (position.device, position.inode, position.offset) == (st.st_dev, st.st_ino, 2)
