"""The REST API against the real server process and a real SQLite store."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import dns.rcode
import pytest

from tests.integration.api_client import Api
from tests.integration.api_client import make_token as token
from tests.integration.conftest import CLEAN, DYNAMIC
from tests.integration.server import RunningServer, start_server, write_config
from tests.integration.test_responder import answers, name, udp
from tests.support.fakedns import FakeAuthority


@pytest.fixture
def api(server: RunningServer) -> Iterator[Api]:
    assert server.api is not None
    yield Api(*server.api, token=token(server, "ops", "write"))


@pytest.fixture
def admin(server: RunningServer) -> Api:
    assert server.api is not None
    return Api(*server.api, token=token(server, "root", "admin"))


def test_health_and_readiness_are_open(api: Api) -> None:
    assert api.get("/healthz", token=None).status == 200
    ready = api.get("/readyz", token=None)
    assert ready.status == 200 and ready.json["ready"] is True


@pytest.mark.parametrize(
    ("token_value", "status"),
    [(None, 401), ("", 401), ("s25rbl_not-a-real-token", 401)],
    ids=["none", "empty", "unknown"],
)
def test_v1_needs_a_valid_token(api: Api, token_value: str | None, status: int) -> None:
    reply = api.get("/v1/entries", token=token_value)
    assert reply.status == status
    assert reply.content_type == "application/problem+json"
    assert reply.json["status"] == status
    assert reply.headers["www-authenticate"].startswith("Bearer")


def test_scopes_are_enforced(server: RunningServer, api: Api) -> None:
    reporter = Api(api.host, api.port, token(server, "mx1", "report"))
    reader = Api(api.host, api.port, token(server, "viewer", "read"))
    assert reporter.get("/v1/entries").status == 403
    assert reader.get("/v1/entries").status == 200
    denied = reader.post("/v1/entries", {"list": "white", "kind": "ip", "value": "192.0.2.1"})
    assert denied.status == 403 and "'write'" in denied.json["detail"]
    assert api.get("/v1/audit").status == 403  # write is not admin


def test_revoked_token_is_refused(server: RunningServer, api: Api) -> None:
    temp = Api(api.host, api.port, token(server, "temp", "read"))
    assert server.cli("token", "revoke", "temp").returncode == 0
    # A revocation made outside the API reaches a running node within the token cache time;
    # this token was never used, so it was never cached.
    assert temp.get("/v1/entries").status == 401


def test_a_write_changes_the_next_dns_answer_at_once(server: RunningServer, api: Api) -> None:
    assert answers(udp(server, name(DYNAMIC[0]), "A")) == ["127.0.0.2"]
    created = api.post(
        "/v1/entries", {"list": "white", "kind": "ip", "value": DYNAMIC[0], "reason": "partner"}
    )
    assert created.status == 201, created.body
    entry = created.json
    assert entry["created_by"] == "token:ops"
    assert created.headers["location"] == f"/v1/entries/{entry['id']}"
    assert udp(server, name(DYNAMIC[0]), "A").rcode() == dns.rcode.NXDOMAIN  # no waiting
    assert answers(udp(server, name(DYNAMIC[0], "wl.s25rbl.test"), "A")) == ["127.0.0.2"]

    assert api.get(f"/v1/entries/{entry['id']}").json["reason"] == "partner"
    patched = api.patch(
        f"/v1/entries/{entry['id']}", {"reason": "partner relay", "expires_at": "2099-01-01T00:00:00Z"}
    )
    assert patched.status == 200
    assert patched.json["reason"] == "partner relay" and patched.json["expires_at"].startswith("2099-01-01")

    assert api.delete(f"/v1/entries/{entry['id']}").status == 204
    assert answers(udp(server, name(DYNAMIC[0]), "A")) == ["127.0.0.2"]
    assert api.get(f"/v1/entries/{entry['id']}").status == 404


def test_blacklisting_by_api_lists_a_clean_host_at_once(server: RunningServer, api: Api) -> None:
    assert udp(server, name(CLEAN[0]), "A").rcode() == dns.rcode.NXDOMAIN
    reply = api.post("/v1/entries", {"list": "black", "kind": "hostname", "value": CLEAN[1]})
    assert reply.status == 201
    assert answers(udp(server, name(CLEAN[0]), "TXT")) == ['"domain check, be patient"']


def test_batch_is_all_or_nothing(api: Api) -> None:
    assert api.post("/v1/entries", {"list": "black", "kind": "ip", "value": "198.51.100.1"}).status == 201
    batch = {
        "entries": [
            {"list": "black", "kind": "ip", "value": "198.51.100.2"},
            {"list": "black", "kind": "ip", "value": "198.51.100.1"},  # exists: 409
        ]
    }
    reply = api.post("/v1/entries", batch)
    assert reply.status == 409
    listed = api.get("/v1/entries?list=black&kind=ip").json["items"]
    assert [e["value"] for e in listed] == ["198.51.100.1"]
    ok = api.post(
        "/v1/entries", {"entries": [{"list": "black", "kind": "cidr", "value": "203.0.113.128/25"}]}
    )
    assert ok.status == 201 and len(ok.json["items"]) == 1


BAD = [
    ("bad-ip", {"list": "white", "kind": "ip", "value": "192.0.2.300"}, 422, "value"),
    ("wide-cidr", {"list": "white", "kind": "cidr", "value": "0.0.0.0/1"}, 422, "value"),
    ("bad-hostname", {"list": "white", "kind": "hostname", "value": "a..b"}, 422, "value"),
    ("hostile-regex", {"list": "black", "kind": "regex", "value": "(a+)\\1"}, 422, "value"),
    ("regex-matches-all", {"list": "white", "kind": "regex", "value": ".*"}, 422, "value"),
    (
        "long-reason",
        {"list": "white", "kind": "ip", "value": "192.0.2.1", "reason": "x" * 256},
        422,
        "reason",
    ),
    (
        "past-expiry",
        {"list": "white", "kind": "ip", "value": "192.0.2.1", "expires_at": "2001-01-01T00:00:00Z"},
        422,
        "expires_at",
    ),
    (
        "naive-expiry",
        {"list": "white", "kind": "ip", "value": "192.0.2.1", "expires_at": "2099-01-01T00:00:00"},
        422,
        "expires_at",
    ),
    ("bad-enum", {"list": "grey", "kind": "ip", "value": "192.0.2.1"}, 422, "list"),
    ("unknown-field", {"list": "white", "kind": "ip", "value": "192.0.2.1", "colour": "red"}, 422, "colour"),
    ("missing-field", {"list": "white", "kind": "ip"}, 422, "value"),
    ("wrong-type", {"list": "white", "kind": "ip", "value": 1}, 422, "value"),
    ("not-an-object", [1, 2], 422, "body"),
    ("batch-item", {"entries": [{"list": "white", "kind": "ip", "value": "x"}]}, 422, "entries[0].value"),
    ("empty-batch", {"entries": []}, 422, "entries"),
]


@pytest.mark.parametrize(("body", "status", "field"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_a_problem_naming_the_field(api: Api, body: object, status: int, field: str) -> None:
    reply = api.post("/v1/entries", body)
    assert reply.status == status, reply.body
    assert reply.content_type == "application/problem+json"
    problem = reply.json
    assert problem["status"] == status and problem["title"] and problem["detail"]
    assert field in [e["field"] for e in problem.get("errors", [])]
    assert api.get("/v1/entries?source=manual").json["items"] == []  # nothing written


def test_malformed_json_wrong_type_and_oversize(api: Api) -> None:
    assert api.post("/v1/entries", raw=b"{not json", content_type="application/json").status == 400
    assert (
        api.post("/v1/entries", raw=b"list=white", content_type="application/x-www-form-urlencoded").status
        == 415
    )
    big = {
        "entries": [
            {"list": "black", "kind": "ip", "value": f"10.0.{i // 256}.{i % 256}"} for i in range(1001)
        ]
    }
    assert api.post("/v1/entries", big).status == 413
    huge = b'{"x": "' + b"a" * (9 * 1024 * 1024) + b'"}'
    assert api.post("/v1/entries", raw=huge, content_type="application/json").status == 413


def test_not_found_and_method_not_allowed_are_problems(api: Api) -> None:
    for path in ("/v1/entries/999999", "/v1/entries/abc", "/v1/nothing"):
        reply = api.get(path)
        assert reply.status == 404 and reply.content_type == "application/problem+json", path
    reply = api.request("PUT", "/v1/entries/1", {"reason": "x"})
    assert reply.status == 405 and "allow" in reply.headers


def test_listing_filters_and_cursor_pagination(api: Api) -> None:
    entries = [
        {"list": "black", "kind": "ip", "value": f"198.51.100.{i}", "reason": f"run {i}"}
        for i in range(10, 25)
    ]
    assert api.post("/v1/entries", {"entries": entries}).status == 201
    seen: list[str] = []
    cursor = ""
    for _ in range(10):
        page = api.get(f"/v1/entries?list=black&limit=4{cursor}").json
        seen += [e["value"] for e in page["items"]]
        if page["next_cursor"] is None:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert seen == [e["value"] for e in entries]
    found = api.get("/v1/entries?q=run%2017").json["items"]
    assert [e["value"] for e in found] == ["198.51.100.17"]
    assert api.get("/v1/entries?source=builtin&limit=1000").json["items"]
    # What the starter whitelist of a release added; every other entry has no release.
    brought = api.get("/v1/entries?source=builtin&starter_release=0.2.0&limit=1000").json["items"]
    assert brought and {e["starter_release"] for e in brought} == {"0.2.0"}
    manual = api.get("/v1/entries?source=manual&limit=1000").json["items"]
    assert manual and {e["starter_release"] for e in manual} == {None}
    bad = api.get("/v1/entries?starter_release=latest")
    assert bad.status == 422 and bad.json["errors"][0]["field"] == "starter_release"
    assert api.get("/v1/entries?expired=true").json["items"] == []
    assert api.get("/v1/entries?limit=0").status == 422
    assert api.get("/v1/entries?kind=asn").status == 422
    assert api.get("/v1/entries?colour=red").status == 422


def test_import_postfix_csv_json_and_line_numbered_errors(api: Api) -> None:
    table = "/\\.bay[0-9]*\\.hotmail\\.com$/ OK\n192.0.2.77 REJECT spam run\n"
    reply = api.post("/v1/import", raw=table.encode(), content_type="text/plain")
    assert reply.status == 200 and reply.json == {"added": 2, "already_present": 0}
    bad = api.post("/v1/import", raw=b"ok.example OK\n/(?=x)/ OK\nbad..name OK\n", content_type="text/plain")
    assert bad.status == 422
    assert [e["line"] for e in bad.json["errors"]] == [2, 3]
    assert api.get("/v1/entries?q=ok.example").json["items"] == []  # all or nothing
    csv_body = b"list,kind,value,reason\nwhite,domain,partner.example,partner\nblack,ip,192.0.2.78,\n"
    assert api.post("/v1/import", raw=csv_body, content_type="text/csv").json["added"] == 2
    js = b'[{"list": "white", "kind": "hostname", "value": "mx.partner.example"}]'
    assert api.post("/v1/import", raw=js, content_type="application/json").json["added"] == 1
    plain = api.post("/v1/import?list=black", raw=b"198.51.100.200\n", content_type="text/plain")
    assert plain.json["added"] == 1
    assert api.post("/v1/import", raw=b"x", content_type="application/pdf").status == 415


def test_export_formats(api: Api) -> None:
    api.post("/v1/entries", {"list": "black", "kind": "ip", "value": "192.0.2.99", "reason": "r"})
    postfix = api.get("/v1/export?format=postfix&list=black")
    assert (
        postfix.status == 200
        and "/^192\\.0\\.2\\.99$/ 450 4.7.1 domain check, be patient" in postfix.body.decode()
    )
    rbldnsd = api.get("/v1/export?format=rbldnsd").body.decode().splitlines()
    assert "192.0.2.99" in rbldnsd
    csv_text = api.get("/v1/export?format=csv&list=black").body.decode()
    assert csv_text.splitlines()[0] == "list,kind,value,reason" and "black,ip,192.0.2.99,r" in csv_text
    js = api.get("/v1/export?format=json&list=white").json
    assert {e["value"] for e in js} >= {"hotmail.com", "google.com"}
    assert api.get("/v1/export?format=xml").status == 422


def test_check_explains_address_and_name(api: Api) -> None:
    explained = api.get(f"/v1/check/{DYNAMIC[0]}").json
    assert (explained["code"], explained["step"], explained["rule"]) == ("127.0.0.2", "s25r-rule", "r1")
    assert explained["confirmed_names"] == [DYNAMIC[1]]
    assert api.get("/v1/check/not-an-ip").status == 422
    named = api.get(f"/v1/check?name={DYNAMIC[1]}").json
    assert named["name"] == DYNAMIC[1] and named["code"] == "127.0.0.2"
    assert api.get("/v1/check?name=bad..name").status == 422
    assert api.get("/v1/check?name=[zz]").status == 422  # brackets hold an address literal or nothing
    assert api.get("/v1/check?name=[192.0.2.1]").json["step"] == "ip-literal"
    assert api.get("/v1/check/fe80::1%25eth0").status == 422


def test_stats_metrics_and_audit(server: RunningServer, api: Api, admin: Api) -> None:
    udp(server, name(DYNAMIC[0]), "A")
    api.post("/v1/entries", {"list": "black", "kind": "ip", "value": "192.0.2.55"})
    stats = api.get("/v1/stats").json
    assert stats["queries"]["blocklist"]["127.0.0.2"] >= 1
    assert stats["lists"]["white_name"] >= 30
    assert stats["lookups"]["fresh"] >= 1
    metrics = api.get("/metrics", token=None)
    assert metrics.status == 200
    text = metrics.body.decode()
    assert 's25rbl_dns_queries_total{result="127.0.0.2",step="s25r-rule",zone="blocklist"}' in text
    assert "s25rbl_rdns_lookup_seconds_bucket" in text
    assert 's25rbl_api_requests_total{route="/v1/entries",status="201"}' in text
    events = admin.get("/v1/audit").json["items"]
    assert any(
        e["action"] == "entry.add" and e["actor"] == "token:ops" and "192.0.2.55" in e["detail"]
        for e in events
    )
    assert any(e["action"] == "token.create" for e in events)


def test_openapi_document_is_served_without_a_token(api: Api) -> None:
    reply = api.get("/v1/openapi.yaml", token=None)
    assert reply.status == 200 and reply.body.startswith(b"openapi: 3.1")
    assert reply.content_type == "application/yaml"


def test_the_root_leads_to_the_operators_page_without_a_token(api: Api) -> None:
    # The URL the serve banner prints: the operator's page (its sign-in), not a 404.
    reply = api.get("/", token=None)
    assert reply.status == 302 and reply.headers["location"] == "/ui/"
    assert "default-src 'none'" in reply.headers["content-security-policy"]


def test_without_the_operators_page_the_root_is_a_page_of_the_open_routes(
    tmp_path: Path, upstream: FakeAuthority
) -> None:
    config = write_config(
        tmp_path / "s25rbl.toml", (upstream.host, upstream.port), tmp_path / "s.db", "[ui]\nenabled = false\n"
    )
    server = start_server(config)
    try:
        assert server.api is not None
        api = Api(*server.api, token=token(server, "ops", "write"))
        api.post("/v1/entries", {"list": "white", "kind": "domain", "value": "partner.example"})
        reply = api.get("/", token=None)
        assert reply.status == 200 and reply.content_type == "text/html"
        assert "default-src 'none'" in reply.headers["content-security-policy"]
        page = reply.body.decode()
        links = set(re.findall(r'href="([^"]+)"', page))
        assert links == {"/v1/openapi.yaml", "/healthz", "/readyz", "/metrics"}
        for link in links:
            assert api.get(link, token=None).status == 200, link
        assert "ui.enabled" in page and api.get("/ui/", token=None).status == 404
        # Nothing about the lists or the configuration.
        for secret in ("partner.example", "hotmail", "s25rbl.test", "sqlite", "0.1.0"):
            assert secret not in page, secret
    finally:
        server.stop()


def test_concurrent_writes_from_many_clients_lose_nothing(api: Api) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def add(i: int) -> int:
        return api.post(
            "/v1/entries", {"list": "black", "kind": "ip", "value": f"198.18.{i // 200}.{i % 200}"}
        ).status

    started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(add, range(200)))
    assert statuses.count(201) == 200, statuses
    listed = api.get("/v1/entries?list=black&kind=ip&limit=1000").json["items"]
    assert len([e for e in listed if e["value"].startswith("198.18.")]) == 200
    assert time.monotonic() - started < 120


def test_cli_through_the_api_does_what_the_local_cli_does(server: RunningServer, api: Api) -> None:
    remote = ["--api", f"http://{api.host}:{api.port}", "--token", str(api.token)]
    added = server.cli("entries", "add", "black", "ip", "192.0.2.123", "--reason", "via api", *remote)
    assert added.returncode == 0, added.stderr
    assert "added entry" in added.stdout
    listed = server.cli("entries", "list", "--list", "black", "--json", *remote)
    assert [e["value"] for e in json.loads(listed.stdout)] == ["192.0.2.123"]
    assert answers(udp(server, name("192.0.2.123"), "A")) == ["127.0.0.3"]  # at once, no polling
    dup = server.cli("entries", "add", "black", "ip", "192.0.2.123", *remote)
    assert dup.returncode == 1 and "409" in dup.stderr
    bad = server.cli("import", "-", *remote, input="/(?=x)/ OK\n")
    assert bad.returncode == 2 and "line 1" in bad.stderr
    imported = server.cli("import", "-", "--list", "white", *remote, input="partner.example\n")
    assert "imported 1 entries" in imported.stdout
    exported = server.cli("export", "--format", "rbldnsd", *remote)
    assert "192.0.2.123" in exported.stdout.splitlines()
    explained = server.cli("check", DYNAMIC[0], "--json", *remote)
    assert '"rule": "r1"' in explained.stdout
    entry_id = json.loads(listed.stdout)[0]["id"]
    assert server.cli("entries", "remove", str(entry_id), *remote).returncode == 0
    assert answers(udp(server, name("192.0.2.123"), "A")) == ["127.0.0.4"]  # back to: no PTR at all
    denied = server.cli("entries", "list", "--api", f"http://{api.host}:{api.port}", "--token", "nope")
    assert denied.returncode == 1 and "401" in denied.stderr
