"""Schemathesis against the real ``s25rbl serve`` and the openapi.yaml it serves.

Every operation of the spec is called with generated requests, valid and invalid ones, with an
admin token, and every response is checked: no server error, a documented status code, content
type and headers, a body that conforms to the response schema, invalid input refused, secured
operations refusing a missing or bad token, undocumented methods answered 405. The numbers are
bounded (examples per operation, derandomised generation) so a run is the same every time and
takes well under a minute on two cores. ``S25RBL_FUZZ_EXAMPLES`` raises the bound for a longer
hunt by hand.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from tests.integration.conftest import populate
from tests.integration.server import RunningServer, start_server, write_config
from tests.support.fakedns import FakeAuthority

SPEC = Path(__file__).resolve().parents[2] / "openapi.yaml"
MAX_EXAMPLES = int(os.environ.get("S25RBL_FUZZ_EXAMPLES", "50"))

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    ignored_auth,
    unsupported_method,
]
# The checks that judge a single response, for hand-written requests.
RESPONSE_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

# Checks left out for one operation, each with the reason.
NOT_APPLICABLE = {
    # By design an invalid report does not fail the request: it is answered 202 with the report
    # counted as `refused` and its problem in `errors[]`, so the other reports of a batch still count.
    "POST /v1/reports": (negative_data_rejection,),
}

# The operations come from the repository's openapi.yaml (the fixture below checks that the server
# serves exactly that file); requests go to the live server.
schema = schemathesis.openapi.from_path(SPEC)
# The admin token is sent with every request (below), so no Authorization header is generated;
# `ignored_auth` still checks that each secured operation refuses a missing or a bad token.
schema.config.generation.update(
    max_examples=MAX_EXAMPLES, deterministic=True, database="none", with_security_parameters=False
)
# A batch of more than 1000 entries is refused with 413 ("batches bounded"), not 422.
schema.config.checks.negative_data_rejection.expected_statuses = [
    *schema.config.checks.negative_data_rejection.expected_statuses,
    "413",
]

FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


@dataclass(frozen=True)
class Target:
    base_url: str
    headers: dict[str, str]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server for the whole module: one per operation would cost more than the fuzzing.

    Entries the fuzzer creates, changes or deletes stay in this server's own store."""
    fake = FakeAuthority()
    fake.start()
    populate(fake)
    state = tmp_path_factory.mktemp("schemathesis")
    try:
        running = start_server(
            write_config(state / "s25rbl.toml", (fake.host, fake.port), state / "state" / "s25rbl.db")
        )
    except BaseException:
        fake.stop()
        raise
    try:
        yield running
    finally:
        running.stop()
        fake.stop()


@pytest.fixture(scope="module")
def target(live: RunningServer) -> Target:
    made = live.cli("token", "create", "--name", "fuzz", "--scope", "admin")
    assert made.returncode == 0, made.stderr
    assert live.api is not None
    base = f"http://{live.api[0]}:{live.api[1]}"
    auth = {"Authorization": f"Bearer {made.stdout.strip()}"}
    served = requests.get(f"{base}/v1/openapi.yaml", headers=auth, timeout=30)
    assert served.status_code == 200, served.text
    assert served.text == SPEC.read_text(encoding="utf-8"), "the server serves another openapi.yaml"
    return Target(base, auth)


@schema.parametrize()
@FUZZ_SETTINGS
def test_the_live_api_conforms_to_its_spec(case: schemathesis.Case[Any], target: Target) -> None:
    checks = [check for check in CHECKS if check not in NOT_APPLICABLE.get(case.operation.label, ())]
    case.call_and_validate(base_url=target.base_url, headers=target.headers, checks=checks, timeout=30)


# Inputs found by fuzzing and reading that answered 500 once; kept as regression cases.
# (test id, operation, Case arguments, the bug)
KNOWN_500S: list[tuple[str, str, dict[str, Any], str]] = [
    (
        "limit-superscript-two",
        "GET /v1/entries",
        {"query": {"limit": "\u00b2"}},
        "schemas.int_param: '²'.isdigit() is true but int('²') raises ValueError",
    ),
    (
        "cursor-superscript-two",
        "GET /v1/audit",
        {"query": {"cursor": "\u00b2"}},
        "schemas.int_param: '²'.isdigit() is true but int('²') raises ValueError",
    ),
    (
        "get-id-superscript-two",
        "GET /v1/entries/{id}",
        {"path_parameters": {"id": "\u00b2"}},
        "routes._entry_id: '²'.isdigit() is true but int('²') raises ValueError",
    ),
    (
        "delete-id-superscript-two",
        "DELETE /v1/entries/{id}",
        {"path_parameters": {"id": "\u00b2"}},
        "routes._entry_id: '²'.isdigit() is true but int('²') raises ValueError",
    ),
    (
        "csv-carriage-return",
        "POST /v1/import",
        {"body": "white,ip,192.0.2.1\rx\n", "media_type": "text/csv"},
        "routes._parse_csv: csv.Error (new-line character in unquoted field) is not caught",
    ),
    (
        "csv-huge-field",
        "POST /v1/import",
        {"body": "white,ip," + "a" * 200_000 + "\n", "media_type": "text/csv"},
        "routes._parse_csv: csv.Error (field larger than field limit) is not caught",
    ),
    (
        "expiry-after-year-9999",
        "POST /v1/entries",
        {
            "body": {
                "list": "black",
                "kind": "ip",
                "value": "192.0.2.99",
                "expires_at": "9999-12-31T23:59:59-23:59",
            },
            "media_type": "application/json",
        },
        "schemas.parse_expiry: astimezone(UTC) raises OverflowError past year 9999",
    ),
    (
        "expiry-before-year-1",
        "PATCH /v1/entries/{id}",
        {
            "path_parameters": {"id": 999_999},  # the body is checked before the id is looked up
            "body": {"expires_at": "0001-01-01T00:00:00+23:00"},
            "media_type": "application/json",
        },
        "schemas.parse_expiry: astimezone(UTC) raises OverflowError before year 1",
    ),
]


@pytest.mark.parametrize(
    ("label", "arguments"),
    [pytest.param(label, arguments, id=name) for name, label, arguments, _was in KNOWN_500S],
)
def test_inputs_that_broke_the_server(label: str, arguments: dict[str, Any], target: Target) -> None:
    operation = schema.find_operation_by_label(label)
    assert operation is not None, label
    case = operation.Case(**arguments)
    case.call_and_validate(
        base_url=target.base_url, headers=target.headers, checks=RESPONSE_CHECKS, timeout=30
    )
