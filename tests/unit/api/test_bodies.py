"""Request bodies as the API reads them: I-JSON only, bounded in depth and number size, refused
with a 400 that names the problem before any route logic runs; and the throttle that keeps
refusals from flooding the log and the audit table."""

from __future__ import annotations

from typing import Any

import pytest

from s25rbl.api.guard import Throttle
from s25rbl.api.problems import Problem
from s25rbl.api.schemas import MAX_DEPTH, parse_json


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        pytest.param(b"[" * 100_000, "nests deeper than 32", id="nested-far-past-the-stack"),
        pytest.param(b"[" * 40 + b"]" * 40, "nests deeper than 32", id="nested-past-the-limit"),
        pytest.param(b'{"a":' * 40 + b"1" + b"}" * 40, "nests deeper than 32", id="nested-objects"),
        pytest.param(b'{"time": ' + b"9" * 5000 + b"}", "a number of 5000 characters", id="5000-digit-int"),
        pytest.param(b"[1." + b"5" * 100 + b"]", "a number of 102 characters", id="long-float"),
        pytest.param(b"[1e999]", "out of range", id="float-overflows-to-infinity"),
        pytest.param(b"[NaN]", "NaN is not a JSON value", id="nan"),
        pytest.param(b"[-Infinity]", "-Infinity is not a JSON value", id="infinity"),
        pytest.param(
            b'{"reason": "\\ud800"}', "reason: contains a lone UTF-16 surrogate", id="lone-surrogate"
        ),
        pytest.param(
            b'{"reports": [{}, {"sender": "a\\udfffb"}]}',
            "reports[1].sender: contains a lone UTF-16 surrogate",
            id="lone-surrogate-deep",
        ),
        pytest.param(b'{"\\udc80": 1}', "body: contains a lone UTF-16 surrogate", id="lone-surrogate-key"),
        pytest.param(b'{"list": "white", "list": "black"}', "'list' twice", id="duplicate-member"),
        pytest.param(b'{"reason": "caf\xe9"}', "not UTF-8: byte 15", id="latin-1"),
        pytest.param(b"\xff\xfe[\x00]\x00", "not UTF-8: byte 0", id="utf-16"),
        pytest.param(b"{not json", "not valid JSON", id="syntax"),
    ],
)
def test_bad_bodies_are_a_400_naming_the_problem(raw: bytes, says: str) -> None:
    with pytest.raises(Problem) as refused:
        parse_json(raw)
    assert refused.value.status == 400
    assert says in refused.value.detail


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        pytest.param(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH, None, id="at-the-limit"),
        pytest.param(b'{"n": 9223372036854775807}', {"n": 2**63 - 1}, id="int64"),
        pytest.param(b'{"x": -1.7976931348623157e308}', {"x": -1.7976931348623157e308}, id="double"),
        pytest.param(b'{"s": "\\ud83d\\ude00 caf\\u00e9"}', {"s": "\U0001f600 café"}, id="surrogate-pair"),
        pytest.param('{"s": "日本"}'.encode(), {"s": "日本"}, id="utf-8"),
    ],
)
def test_good_bodies_parse(raw: bytes, value: Any) -> None:
    parsed = parse_json(raw)
    if value is not None:
        assert parsed == value


def test_the_throttle_tells_some_and_counts_the_rest_per_window() -> None:
    now = [0.0]
    throttle = Throttle(2, 60.0, clock=lambda: now[0])
    assert [throttle.allow() for _ in range(5)] == [True, True, False, False, False]
    assert throttle.remaining() == 60.0
    now[0] = 59.0
    assert not throttle.allow()
    assert throttle.take_held() == 4 and throttle.take_held() == 0
    now[0] = 60.0
    assert throttle.allow() and throttle.allow() and not throttle.allow()
