"""Abuse of every operation in openapi.yaml against the real server: a new route is covered as
soon as the spec describes it.

For each operation: no token is 401 and a token without the route's scope (the "Scope `x`" its
description names) is 403, both as problem+json; then, with an admin token, hostile requests:
a body past the route's limit, nested 100,000 deep, with a 5,000-digit number, with a lone
surrogate in every string, not UTF-8; query and path parameters not UTF-8, as surrogates, as
5,000-digit numbers; an Authorization header of raw non-UTF-8 bytes. None may be answered
5xx, a body the route reads must be refused with a 4xx, and the server must log no traceback.

The server runs with ``api.max_body`` lowered to 256 KiB, so "past the limit" is cheap to send
to every route.
"""

from __future__ import annotations

import contextlib
import copy
import http.client
import json
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.api_client import make_token
from tests.integration.conftest import populate
from tests.integration.server import RunningServer, start_server, write_config
from tests.support.fakedns import FakeAuthority

SPEC_PATH = Path(__file__).resolve().parents[2] / "openapi.yaml"
SPEC: dict[str, Any] = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
MAX_BODY = 256 * 1024
METHODS = ("get", "put", "post", "patch", "delete")
# A token of each scope, and one that lacks each scope.
LACKING = {"read": "report", "report": "read", "write": "report", "admin": "write"}


def _resolve(node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = SPEC
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


@dataclass(frozen=True)
class Operation:
    method: str
    template: str
    spec: dict[str, Any]
    parameters: list[dict[str, Any]]

    @property
    def label(self) -> str:
        return f"{self.method.upper()} {self.template}"

    @property
    def secured(self) -> bool:
        security = self.spec.get("security", SPEC.get("security", []))
        return bool(security) and {} not in security

    @property
    def scope(self) -> str:
        found = re.search(r"Scope `(\w+)`", self.spec.get("description", ""))
        assert found, f"{self.label}: its description must name its scope (Scope `read`, ...)"
        return found.group(1)

    @property
    def json_body(self) -> Any:
        """The operation's JSON request example, if it takes a JSON body; else None."""
        body = _resolve(self.spec.get("requestBody", {}))
        media = body.get("content", {}).get("application/json")
        if media is None:
            return None
        if "example" in media:
            return media["example"]
        for example in media.get("examples", {}).values():
            return _resolve(example)["value"]
        return {"value": "x"}

    @property
    def takes_body(self) -> bool:
        return "requestBody" in self.spec

    def path(self, override: str | None = None) -> str:
        """The path with each path parameter set to its example (or ``override``, sent raw)."""
        path = self.template
        for param in self.parameters:
            if param["in"] != "path":
                continue
            value = override if override is not None else urllib.parse.quote(str(_example(param)), safe="")
            path = path.replace("{" + param["name"] + "}", value)
        return path

    def query_names(self) -> list[str]:
        return [p["name"] for p in self.parameters if p["in"] == "query"]


def _example(param: dict[str, Any]) -> Any:
    if "example" in param:
        return param["example"]
    for example in param.get("examples", {}).values():
        return _resolve(example)["value"]
    schema = _resolve(param.get("schema", {}))
    return 1 if schema.get("type") == "integer" else "1"


def operations() -> list[Operation]:
    found = []
    for template, item in SPEC["paths"].items():
        shared = [_resolve(p) for p in item.get("parameters", [])]
        for method in METHODS:
            if method in item:
                own = [_resolve(p) for p in item[method].get("parameters", [])]
                found.append(Operation(method, template, item[method], shared + own))
    return found


OPERATIONS = operations()


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes


@dataclass
class Target:
    server: RunningServer
    tokens: dict[str, str]

    def send(
        self,
        method: str,
        path: str,
        *,
        token: str | bytes | None = None,
        body: bytes | None = None,
        content_type: str = "application/json",
    ) -> Answer:
        assert self.server.api is not None
        conn = http.client.HTTPConnection(*self.server.api, timeout=60)
        try:
            conn.putrequest(method.upper(), path, skip_accept_encoding=True)
            if token is not None:
                value = token if isinstance(token, bytes) else f"Bearer {token}".encode()
                conn.putheader("Authorization", value)
            if body is not None:
                conn.putheader("Content-Type", content_type)
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders()
            if body is not None:
                # Refused before it was all sent: the answer is waiting all the same.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    conn.send(body)
            response = conn.getresponse()
            return Answer(response.status, response.getheader("Content-Type") or "", response.read())
        finally:
            conn.close()


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    fake = FakeAuthority()
    fake.start()
    populate(fake)
    state = tmp_path_factory.mktemp("abuse")
    config = write_config(state / "s25rbl.toml", (fake.host, fake.port), state / "s25rbl.db")
    text = config.read_text().replace(
        '[api]\nlisten = "127.0.0.1:0"\n', f'[api]\nlisten = "127.0.0.1:0"\nmax_body = {MAX_BODY}\n'
    )
    config.write_text(text)
    try:
        server = start_server(config)
    except BaseException:
        fake.stop()
        raise
    try:
        tokens = {
            scope: make_token(server, f"abuse-{scope}", scope)
            for scope in ("read", "report", "write", "admin")
        }
        yield Target(server, tokens)
        output = "".join(server.output)
        assert "Traceback" not in output, output[-5000:]
        assert " ERROR " not in output, output[-5000:]
    finally:
        server.stop()
        fake.stop()


def _with_surrogates(value: Any) -> Any:
    """The value with a lone surrogate appended to every string in it, keys included."""
    if isinstance(value, str):
        return value + "\ud800"
    if isinstance(value, list):
        return [_with_surrogates(v) for v in value]
    if isinstance(value, dict):
        return {_with_surrogates(k): _with_surrogates(v) for k, v in value.items()}
    return value


def hostile_bodies(op: Operation) -> list[tuple[str, bytes, str]]:
    example = op.json_body
    surrogates = json.dumps(_with_surrogates(copy.deepcopy(example if example is not None else {"x": "y"})))
    return [
        ("oversized", b'{"x": "' + b"a" * MAX_BODY + b'"}', "application/json"),
        ("nested", b"[" * 100_000, "application/json"),
        ("nested-objects", b'{"a":' * 50_000, "application/json"),
        ("huge-number", b'{"value": ' + b"7" * 5000 + b"}", "application/json"),
        ("lone-surrogates", surrogates.encode(), "application/json"),
        ("not-utf-8", b'{"value": "\xff\xfe"}', "application/json"),
        ("not-utf-8-text", b"192.0.2.1 \xff OK\n", "text/plain"),
    ]


@pytest.mark.parametrize("op", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_every_route_refuses_no_token_and_the_wrong_scope(target: Target, op: Operation) -> None:
    if not op.secured:
        assert target.send(op.method, op.path()).status < 500
        return
    missing = target.send(op.method, op.path())
    assert missing.status == 401, (op.label, missing)
    assert missing.content_type.startswith("application/problem+json")
    garbage = target.send(op.method, op.path(), token=b"Bearer \xff\xfe\x80 token")
    assert garbage.status == 401, (op.label, garbage)
    lacking = target.send(op.method, op.path(), token=target.tokens[LACKING[op.scope]])
    assert lacking.status == 403, (op.label, lacking)
    assert lacking.content_type.startswith("application/problem+json")


@pytest.mark.parametrize("op", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_no_hostile_body_is_a_server_error(target: Target, op: Operation) -> None:
    admin = target.tokens["admin"]
    for name, body, content_type in hostile_bodies(op):
        answer = target.send(op.method, op.path(), token=admin, body=body, content_type=content_type)
        assert answer.status < 500, (op.label, name, answer)
        if op.takes_body and name != "not-utf-8-text":
            assert 400 <= answer.status < 500, (op.label, name, answer)
            assert answer.content_type.startswith("application/problem+json"), (op.label, name)
        if name == "oversized":
            assert answer.status == 413, (op.label, answer)


@pytest.mark.parametrize("op", OPERATIONS, ids=[op.label for op in OPERATIONS])
def test_no_hostile_parameter_is_a_server_error(target: Target, op: Operation) -> None:
    admin = target.tokens["admin"]
    values = {
        "not-utf-8": "%FF%FE",
        "surrogate": "%ED%A0%80",
        "nul": "%00",
        "huge-number": "9" * 5000,
        "negative": "-1",
        "long": "a" * 7000,
    }
    for name, value in values.items():
        if "{" in op.template:
            answer = target.send(op.method, op.path(override=value), token=admin)
            assert answer.status < 500, (op.label, "path", name, answer)
        for param in op.query_names():
            query = "&".join(f"{p}={value if p == param else ''}" for p in op.query_names())
            answer = target.send(op.method, f"{op.path()}?{query}", token=admin)
            assert answer.status < 500, (op.label, param, name, answer)
