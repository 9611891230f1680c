"""The log reporter's state file and its view of a log across rotation, restarts and --from-end."""

from __future__ import annotations

import time
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from s25rbl.errors import StateError
from s25rbl.reporter.logfile import LogFile
from s25rbl.reporter.parse import LineParser
from s25rbl.reporter.state import MAX_LINE, Position, StateFile
from tests.unit.reporter.samples import saved_position

ZONES = ("bl.s25rbl.test", "hl.s25rbl.test")
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def parser(now: datetime = NOW, tz: Any = UTC) -> LineParser:
    return LineParser(ZONES, tz=tz, now=lambda: now)


# --- the state file -------------------------------------------------------------------------


def test_state_file_round_trip_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "report.state"
    state = StateFile(path)
    state.open()
    state.save("/var/log/mail.log", Position(1, 2, 300, "ab", 300))
    state.close()
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.state", "report.state.lock"]
    again = StateFile(path)
    again.open()
    try:
        assert again.get("/var/log/mail.log") == Position(1, 2, 300, "ab", 300)
        assert again.get("/other") is None
    finally:
        again.close()


def test_state_file_is_locked_against_a_second_reporter(tmp_path: Path) -> None:
    first = StateFile(tmp_path / "s")
    first.open()
    try:
        with pytest.raises(StateError, match="in use"):
            StateFile(tmp_path / "s").open()
    finally:
        first.close()


@pytest.mark.parametrize("content", ["not json", '{"files": 3}', '{"files": {"/x": {"inode": -1}}}'])
def test_a_damaged_state_file_is_ignored(
    tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "s").write_text(content)
    state = StateFile(tmp_path / "s")
    state.open()
    state.close()
    assert state.files == {}
    assert "state file" in caplog.text


def read_all(logfile: LogFile, limit: float = 5.0) -> list[bytes]:
    """Lines until the file has nothing for a moment (following) or is finished."""
    lines: list[bytes] = []
    deadline = time.monotonic() + limit
    idle_since: float | None = None
    while time.monotonic() < deadline:
        line = logfile.read_line()
        if line is not None:
            lines.append(line)
            idle_since = None
            continue
        if logfile.finished():
            break
        idle_since = idle_since or time.monotonic()
        if time.monotonic() - idle_since > 3 * logfile.rotate_quiet:
            break
        time.sleep(0.01)
    return lines


def test_lines_and_offsets_and_a_partial_last_line(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"one\ntwo\r\nthr")
    following = LogFile(str(log), follow=True, rotate_quiet=0.05)
    following.start(None)
    assert read_all(following, 0.5) == [b"one", b"two"]
    assert following.offset == len(b"one\ntwo\r\n")  # "thr" is being written: not yet a line
    with log.open("ab") as fh:
        fh.write(b"ee\n")
    assert read_all(following, 0.5) == [b"three"]
    following.close()

    log.write_bytes(b"one\nlast without newline")
    once = LogFile(str(log), follow=False)
    once.start(None)
    assert read_all(once) == [b"one", b"last without newline"]
    assert once.finished()
    once.close()


def test_an_overlong_line_is_handed_over_once_and_skipped(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"a\n" + b"x" * (3 * MAX_LINE) + b"\nb\n")
    logfile = LogFile(str(log), follow=False)
    logfile.start(None)
    lines = read_all(logfile)
    logfile.close()
    assert [len(x) for x in lines] == [1, MAX_LINE, 1]
    assert lines[0] == b"a" and lines[2] == b"b"


def test_rotation_by_rename_finishes_the_old_file_first(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"1\n2\n")
    logfile = LogFile(str(log), follow=True, rotate_quiet=0.2)
    logfile.start(None)
    assert read_all(logfile, 0.3) == [b"1", b"2"]
    old_inode = logfile.inode
    log.rename(tmp_path / "mail.log.1")
    log.write_bytes(b"new-1\n")
    # The logger writes to the old file until it reopens; those lines come first.
    with (tmp_path / "mail.log.1").open("ab") as fh:
        fh.write(b"3\n")
    assert read_all(logfile, 3) == [b"3", b"new-1"]
    assert logfile.inode != old_inode and logfile.offset == len(b"new-1\n")
    logfile.close()


def test_rotation_by_rename_before_the_new_file_exists(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"1\n")
    logfile = LogFile(str(log), follow=True, rotate_quiet=0.05)
    logfile.start(None)
    assert read_all(logfile, 0.2) == [b"1"]
    log.rename(tmp_path / "mail.log.1")
    assert read_all(logfile, 0.2) == []
    with (tmp_path / "mail.log.1").open("ab") as fh:
        fh.write(b"2\n")
    assert read_all(logfile, 0.2) == [b"2"]
    log.write_bytes(b"new\n")
    assert read_all(logfile, 1) == [b"new"]
    logfile.close()


def test_rotation_by_truncation_rereads_from_the_start(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"first line\nsecond line\n")
    logfile = LogFile(str(log), follow=True, rotate_quiet=0.05)
    logfile.start(None)
    assert read_all(logfile, 0.2) == [b"first line", b"second line"]
    with log.open("r+b") as fh:  # copytruncate
        fh.truncate(0)
    with log.open("ab") as fh:
        fh.write(b"after\n")
    assert read_all(logfile, 0.5) == [b"after"]
    logfile.close()


def test_restart_resumes_at_the_saved_offset(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"1\n2\n3\n")
    position = saved_position(log, 2)
    logfile = LogFile(str(log), follow=False)
    logfile.start(position)
    assert read_all(logfile) == [b"3"]
    logfile.close()


def test_restart_after_rotation_while_stopped_finishes_the_rotated_file(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"1\n2\n3\n")
    position = saved_position(log, 1)
    log.rename(tmp_path / "mail.log.1")
    log.write_bytes(b"new-1\nnew-2\n")
    logfile = LogFile(str(log), follow=False)
    logfile.start(position)
    assert read_all(logfile) == [b"2", b"3", b"new-1", b"new-2"]
    logfile.close()


def test_restart_after_the_rotated_file_is_gone_starts_the_new_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"1\n2\n")
    position = saved_position(log, 1)
    log.rename(tmp_path / "mail.log.1")
    keep = (tmp_path / "mail.log.1").open("rb")  # keeps the inode from being reused
    try:
        (tmp_path / "mail.log.1").unlink()
        log.write_bytes(b"new\n")
        logfile = LogFile(str(log), follow=False)
        logfile.start(position)
        assert read_all(logfile) == [b"new"]
        logfile.close()
    finally:
        keep.close()
    assert "not reported" in caplog.text


def test_restart_after_truncation_or_an_inode_reused_starts_over(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"aaaa\nbbbb\n")
    position = saved_position(log, 1)
    with log.open("r+b") as fh:  # same inode, same length, other content: another file
        fh.write(b"cccc\ndddd\n")
    logfile = LogFile(str(log), follow=False)
    logfile.start(position)
    assert read_all(logfile) == [b"cccc", b"dddd"]
    logfile.close()

    log.write_bytes(b"x\n")  # truncated below the saved offset
    logfile = LogFile(str(log), follow=False)
    logfile.start(position)
    assert read_all(logfile) == [b"x"]
    logfile.close()


def test_a_missing_log_without_follow_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="no such file"):
        LogFile(str(tmp_path / "nope"), follow=False).start(None)


# --- --from-end -----------------------------------------------------------------------------


def test_from_end_reads_only_lines_written_after_the_start(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"old-1\nold-2\n")
    with closing(LogFile(str(log), follow=True, rotate_quiet=0.05)) as logfile:
        logfile.start(None, from_end=True)
        assert read_all(logfile, 0.2) == []
        position = logfile.position()
        assert position is not None and position.offset == log.stat().st_size
        with log.open("ab") as fh:
            fh.write(b"new-1\nnew-2\n")
        assert read_all(logfile, 0.2) == [b"new-1", b"new-2"]


def test_from_end_keeps_a_line_being_written_whole(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"old\nhalf a li")
    with closing(LogFile(str(log), follow=True, rotate_quiet=0.05)) as following:
        following.start(None, from_end=True)
        assert following.offset == len(b"old\n")  # the logger is still writing the last line
        assert read_all(following, 0.2) == []
        with log.open("ab") as fh:
            fh.write(b"ne\n")
        assert read_all(following, 0.2) == [b"half a line"]  # not the fragment "ne"

    log.write_bytes(b"old\nlast without newline")
    with closing(LogFile(str(log), follow=False)) as once:  # it will not grow: its last line is complete
        once.start(None, from_end=True)
        assert read_all(once) == []
        assert once.finished() and once.offset == log.stat().st_size


def test_from_end_inside_an_overlong_line_skips_its_rest(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"old\n" + b"x" * (2 * MAX_LINE))
    with closing(LogFile(str(log), follow=True, rotate_quiet=0.05)) as logfile:
        logfile.start(None, from_end=True)
        assert read_all(logfile, 0.2) == []
        with log.open("ab") as fh:
            fh.write(b"xxx\nnew\n")
        assert read_all(logfile, 0.2) == [b"new"]


def test_from_end_reads_a_log_created_after_the_start_whole(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    with closing(LogFile(str(log), follow=True, rotate_quiet=0.05)) as logfile:
        logfile.start(None, from_end=True)
        assert read_all(logfile, 0.2) == []
        log.write_bytes(b"1\n2\n")  # every line of it was written after the start
        assert read_all(logfile, 0.2) == [b"1", b"2"]


@pytest.mark.parametrize("follow", [False, True])
def test_a_saved_position_wins_over_from_end(tmp_path: Path, follow: bool) -> None:
    log = tmp_path / "mail.log"
    log.write_bytes(b"1\n2\n3\n")
    position = saved_position(log, 1)
    with closing(LogFile(str(log), follow=follow, rotate_quiet=0.05)) as logfile:
        logfile.start(position, from_end=True)
        assert read_all(logfile, 0.2) == [b"2", b"3"]
