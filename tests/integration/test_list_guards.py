"""Entries that would list the world are refused on every way in: ``entries add``, the CLI's
``import`` (locally and through ``--api``), ``POST /v1/entries`` and ``POST /v1/import``.
Public suffixes as domains, plain lines with stray words, regexes matching most host names,
and Postfix actions that say nothing about the client."""

from __future__ import annotations

import pytest

from tests.integration.api_client import Api
from tests.integration.api_client import make_token as token
from tests.integration.server import RunningServer

WORLD = [
    ("white", "domain", "com", "public suffix"),
    ("white", "domain", "co.jp", "public suffix"),
    ("black", "domain", "JP.", "public suffix"),
    ("white", "regex", ".", "unrelated host names"),
    ("black", "regex", "[a-z]", "unrelated host names"),
    ("white", "regex", "\\.", "unrelated host names"),
    ("black", "rule", "[0-9]", "unrelated host names"),
]

BAD_TABLE = (
    "ocn.ne.jp OK\n"  # line 1: fine
    "this is garbage\n"  # 2
    "jp some note\n"  # 3
    "co.jp OK\n"  # 4
    "/./ OK\n"  # 5
    "/^dyn-[0-9]+\\.example\\.net$/ HOLD\n"  # 6
    "192.0.2.9 DUNNO\n"  # 7
    "partner.example  # a reason, as documented\n"  # 8: fine
)
BAD_LINES = {2: "extra words", 3: "extra words", 4: "public suffix", 5: "unrelated host names"}
BAD_LINES |= {6: "'HOLD' is not imported", 7: "'DUNNO' is not imported"}


def listed(server: RunningServer) -> str:
    result = server.cli("entries", "list")
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_entries_add_refuses_what_would_list_the_world(server: RunningServer) -> None:
    admin = token(server, "ops", "write")
    assert server.api is not None
    remote = ["--api", f"http://{server.api[0]}:{server.api[1]}", "--token", admin]
    for list_, kind, value, says in WORLD:
        for where in ([], remote):
            result = server.cli("entries", "add", list_, kind, value, *where)
            assert result.returncode != 0, (value, where)
            assert says in result.stderr, result.stderr
            assert "Traceback" not in result.stderr
    assert server.cli("entries", "add", "white", "domain", "ocn.ne.jp").returncode == 0
    assert server.cli("entries", "add", "black", "regex", "^dyn-[0-9]+\\.example\\.net$").returncode == 0
    assert " ocn.ne.jp " in listed(server) and " com " not in listed(server)


def test_rest_entry_creation_refuses_what_would_list_the_world(server: RunningServer) -> None:
    assert server.api is not None
    api = Api(*server.api, token=token(server, "ops", "write"))
    for list_, kind, value, says in WORLD:
        reply = api.post("/v1/entries", {"list": list_, "kind": kind, "value": value})
        assert reply.status == 422, (value, reply.body)
        assert reply.content_type == "application/problem+json"
        assert reply.json["errors"][0]["field"] == "value"
        assert says in reply.json["errors"][0]["problem"]
    good, bad = ({"list": "white", "kind": "domain", "value": v} for v in ("ocn.ne.jp", "jp"))
    assert api.post("/v1/entries", {"entries": [good, bad]}).status == 422
    assert api.get("/v1/entries?source=manual").json["items"] == []  # all or nothing


def test_imports_refuse_bad_lines_by_number_and_import_nothing(server: RunningServer) -> None:
    assert server.api is not None
    write = token(server, "ops", "write")
    api = Api(*server.api, token=write)
    reply = api.post("/v1/import?list=white", raw=BAD_TABLE.encode(), content_type="text/plain")
    assert reply.status == 422 and reply.content_type == "application/problem+json"
    problems = {e["line"]: e["problem"] for e in reply.json["errors"]}
    assert sorted(problems) == sorted(BAD_LINES)
    for line, says in BAD_LINES.items():
        assert says in problems[line], (line, problems[line])

    remote = ["--api", f"http://{server.api[0]}:{server.api[1]}", "--token", write]
    for where in ([], remote):
        result = server.cli("import", "--list", "white", "-", *where, input=BAD_TABLE)
        assert result.returncode != 0
        for line, says in BAD_LINES.items():
            assert f"line {line}:" in result.stderr and says in result.stderr
        assert "line 1:" not in result.stderr and "line 8:" not in result.stderr
    assert api.get("/v1/entries?source=imported").json["items"] == []  # all or nothing

    good = "".join(line + "\n" for n, line in enumerate(BAD_TABLE.splitlines(), 1) if n not in BAD_LINES)
    result = server.cli("import", "--list", "white", "-", input=good)
    assert result.returncode == 0, result.stderr
    assert "imported 2 entries" in result.stdout
    entries = {e["value"]: e for e in api.get("/v1/entries?source=imported").json["items"]}
    assert entries["partner.example"]["reason"] == "a reason, as documented"


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_csv_and_json_imports_refuse_public_suffixes_too(server: RunningServer, fmt: str) -> None:
    body = (
        "list,kind,value,reason\nwhite,domain,ocn.ne.jp,\nwhite,domain,ne.jp,whole isp\n"
        if fmt == "csv"
        else '[{"list": "white", "kind": "domain", "value": "ocn.ne.jp"},\n'
        ' {"list": "white", "kind": "regex", "value": ".*x"}]'
    )
    result = server.cli("import", "--format", fmt, "-", input=body)
    assert result.returncode != 0
    assert ("line 3:" if fmt == "csv" else "line 2:") in result.stderr
    assert "imported" not in listed(server)
