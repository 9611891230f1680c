"""The operator's page over real HTTP without a browser: sessions and their cookie, CSRF and
scopes on every write, the sign-in limit, no token in a URL or the log, security headers,
page sizes, and the writes a browser test does not make (import, edit, export), each through
the one write path into the audit log. Chromium drives the rest (test_ui_browser.py)."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from http.cookies import SimpleCookie

import pytest

from tests.integration.api_client import Api, make_token
from tests.integration.server import RunningServer
from tests.integration.ui_client import Browserless, Page
from tests.integration.ui_lab import BL, POOL2, SPARE, WL, Lab, start_lab

PAGES = [
    "/ui/review/learned",
    "/ui/review/suggestions",
    "/ui/review/forbidden",
    "/ui/review/greylist",
    "/ui/review/tarpits",
    "/ui/explain",
    "/ui/explain?q=203.0.113.7",
    "/ui/lists",
    "/ui/import",
    "/ui/figures",
    "/ui/audit",
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    yield from start_lab(tmp_path_factory.mktemp("ui"))


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A node that believes X-Forwarded-* from 127.0.0.1: it sits behind a TLS proxy there."""
    yield from start_lab(tmp_path_factory.mktemp("ui-proxied"), 'trusted_proxies = ["127.0.0.1"]\n')


def client(lab: Lab, **headers: str) -> Browserless:
    assert lab.server.api is not None
    return Browserless(*lab.server.api, extra_headers=dict(headers))


def ops(lab: Lab) -> Browserless:
    page = client(lab)
    assert page.sign_in(lab.admin).status == 303
    return page


def cookie_of(page: Page, name: str) -> SimpleCookie:
    jar: SimpleCookie = SimpleCookie()
    for line in page.set_cookies:
        if line.startswith(name + "="):
            jar.load(line)
    assert name in jar, page.set_cookies
    return jar


def test_the_root_leads_to_the_page_and_the_page_to_signing_in(lab: Lab) -> None:
    anonymous = client(lab)
    assert (anonymous.get("/").status, anonymous.get("/").location) == (302, "/ui/")
    assert anonymous.get("/ui/").location == "/ui/signin"
    reply = anonymous.get("/ui/lists?kind=ip")
    assert (reply.status, reply.location) == (303, "/ui/signin?next=/ui/lists%3Fkind%3Dip")
    signed = anonymous.sign_in(lab.admin)
    assert (signed.status, signed.location) == (303, "/ui/review")


@pytest.mark.parametrize(
    ("path", "form"),
    [
        ("/ui/lists/add", {"list": "black", "kind": "ip", "value": "192.0.2.1"}),
        ("/ui/learned/revoke", {"ip": "192.0.2.1"}),
        ("/ui/suggestions/1/approve", {}),
        ("/ui/signout", {}),
    ],
    ids=["add", "revoke", "approve", "signout"],
)
def test_a_post_without_a_session_is_refused(lab: Lab, path: str, form: dict[str, str]) -> None:
    reply = client(lab).post(path, {"csrf": "guess", **form})
    assert reply.status == 403 and "not signed in" in reply.text


def test_the_session_cookie_is_httponly_samesite_strict_and_only_for_the_page(lab: Lab) -> None:
    page = client(lab)
    signed = page.sign_in(lab.admin)
    morsel = cookie_of(signed, "s25rbl_session")["s25rbl_session"]
    assert morsel["httponly"] and morsel["samesite"] == "Strict" and morsel["path"] == "/ui/"
    assert not morsel["secure"]  # plain HTTP, no trusted proxy: a Secure cookie would never come back
    assert len(morsel.value) >= 40


@pytest.mark.parametrize(
    ("forwarded_proto", "secure"),
    [("https", True), ("http", False), ("", False)],
    ids=["behind-tls", "proxy-plain-http", "no-header"],
)
def test_the_cookie_is_secure_when_a_trusted_proxy_says_the_browser_used_tls(
    proxied: Lab, forwarded_proto: str, secure: bool
) -> None:
    headers = {"X-Forwarded-Proto": forwarded_proto} if forwarded_proto else {}
    signed = client(proxied, **headers).sign_in(proxied.admin)
    assert bool(cookie_of(signed, "s25rbl_session")["s25rbl_session"]["secure"]) is secure


def test_an_untrusted_peer_cannot_claim_tls(lab: Lab) -> None:
    signed = client(lab, **{"X-Forwarded-Proto": "https"}).sign_in(lab.admin)
    assert not cookie_of(signed, "s25rbl_session")["s25rbl_session"]["secure"]


def test_the_token_is_never_in_a_url_or_the_log(lab: Lab) -> None:
    page = client(lab)
    wrong = "s25rbl_" + "x" * 43
    failed = page.sign_in(wrong)
    assert failed.status == 401 and "Unknown or revoked token" in failed.text
    signed = page.sign_in(lab.admin)
    replies = [failed, signed, page.get(signed.location), page.get("/ui/lists")]
    for reply in replies:
        assert lab.admin not in reply.location and wrong not in reply.location
        assert lab.admin not in reply.text and wrong not in reply.text  # not echoed into the page
    log = "".join(lab.server.output)
    assert "signed in from 127.0.0.1" in log and "failed sign-in from" in log
    assert lab.admin not in log and wrong not in log


def test_failed_sign_ins_are_limited_per_client_address(proxied: Lab) -> None:
    guesser = client(proxied, **{"X-Forwarded-For": "192.0.2.50"})
    for _ in range(5):
        assert guesser.sign_in("s25rbl_wrong").status == 401
    limited = guesser.sign_in(proxied.admin)  # even the right token waits now
    assert limited.status == 429 and int(limited.headers["retry-after"]) > 0
    assert "s25rbl_session" not in guesser.cookies
    # Another client (behind the same trusted proxy) is not held up by the guesser.
    assert client(proxied, **{"X-Forwarded-For": "192.0.2.51"}).sign_in(proxied.admin).status == 303


def test_a_sign_in_form_from_elsewhere_is_refused(lab: Lab) -> None:
    page = client(lab)
    # Login CSRF: another site posts its own token to our form; it has no cookie of ours.
    reply = page.post("/ui/signin", {"nonce": "from-another-site", "token": lab.admin})
    assert reply.status == 403 and "s25rbl_session" not in page.cookies


def test_a_token_without_the_read_scope_cannot_sign_in(lab: Lab) -> None:
    reply = client(lab).sign_in(make_token(lab.server, "reporter-only", "report"))
    assert reply.status == 403 and "no read scope" in reply.text


@pytest.mark.parametrize("csrf", [None, "", "a-token-of-another-session"], ids=["missing", "empty", "wrong"])
def test_a_write_without_the_sessions_csrf_token_is_refused(lab: Lab, csrf: str | None) -> None:
    page = ops(lab)
    form = {"list": "black", "kind": "ip", "value": "192.0.2.76"}
    reply = page.post("/ui/lists/add", form if csrf is None else {"csrf": csrf, **form})
    assert reply.status == 403 and "CSRF token is missing or out of date" in reply.text
    assert lab.answer("192.0.2.76") == "127.0.0.4"  # not blacklisted (.3): nothing was added


def test_a_cross_site_post_is_refused_even_with_the_csrf_token(lab: Lab) -> None:
    page = ops(lab)
    form = {"csrf": page.csrf(), "list": "black", "kind": "ip", "value": "192.0.2.77"}
    reply = page.post("/ui/lists/add", form, **{"Sec-Fetch-Site": "cross-site"})
    assert reply.status == 403
    assert lab.answer("192.0.2.77") == "127.0.0.4"  # not blacklisted (.3): nothing was added


def test_a_read_only_session_gets_403_for_every_write_and_the_audit_log(lab: Lab) -> None:
    page = client(lab)
    assert page.sign_in(lab.viewer).status == 303
    csrf = page.csrf()
    for path, form in [
        ("/ui/lists/add", {"list": "black", "kind": "ip", "value": "192.0.2.78"}),
        ("/ui/lists/1/remove", {}),
        ("/ui/import", {"text": "192.0.2.79", "list": "black"}),
        ("/ui/explain/add", {"q": "x", "list": "white", "kind": "ip", "value": "192.0.2.80"}),
    ]:
        reply = page.post(path, {"csrf": csrf, **form})
        assert reply.status == 403 and "lacks the &#39;write&#39; scope" in reply.text, path
    assert page.get("/ui/audit").status == 403


def test_every_answer_carries_the_security_headers(lab: Lab) -> None:
    page = ops(lab)
    for path in [*PAGES, "/ui/static/ui.css", "/ui/no-such-page", "/ui/signin"]:
        headers = page.get(path).headers
        assert "default-src 'none'" in headers["content-security-policy"], path
        assert "frame-ancestors 'none'" in headers["content-security-policy"], path
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["x-frame-options"] == "DENY"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["cache-control"] in ("no-store", "no-cache"), path


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
        "/ui/../v1/entries",
        "javascript:alert(1)",
    ],
    ids=["scheme-relative", "absolute", "backslash", "outside-the-page", "javascript"],
)
def test_signing_in_never_leads_to_another_site(lab: Lab, target: str) -> None:
    page = client(lab)
    nonce = re.search(r'name="nonce" value="([^"]+)"', page.get("/ui/signin").text)
    assert nonce
    reply = page.post("/ui/signin", {"nonce": nonce.group(1), "token": lab.admin, "next": target})
    assert reply.status == 303 and reply.location.startswith("/ui/") and ".." not in reply.location


def test_unknown_pages_and_bad_input_are_pages_with_the_reason_not_tracebacks(lab: Lab) -> None:
    page = ops(lab)
    missing = page.get("/ui/review/no-such-view")
    assert missing.status == 404 and "no view" in missing.text
    bad = page.get("/ui/explain?q=not+a+host+name!")
    assert bad.status == 422 and "neither an address nor a hostname" in bad.text
    assert page.get("/ui/lists/99999999/edit").status == 404
    assert page.get("/ui/static/../__init__.py").status in (403, 404)
    assert "Traceback" not in "".join(lab.server.output)


def test_importing_a_postfix_table_adds_its_entries_through_the_audited_write_path(lab: Lab) -> None:
    page = ops(lab)
    table = "/^dyn-[0-9]+\\.imported\\.example$/  450 dynamic pool\n/\\.partner-imp\\.example$/  OK\n"
    reply = page.post("/ui/import", {"csrf": page.csrf(), "text": table, "list": ""})
    assert (reply.status, reply.location) == (303, "/ui/lists")
    assert "Imported: 2 added, 0 already present." in page.get("/ui/lists").text
    assert "imported\\.example" in page.get("/ui/lists?q=imported").text
    bad = page.post("/ui/import", {"csrf": page.csrf(), "text": "192.0.2.1 OK\n/(unclosed/ REJECT\n"})
    assert bad.status == 422 and "line 2" in bad.text
    audit = page.get("/ui/audit?action=import").text
    assert "token:ops" in audit and "2 added, 0 present" in audit


def test_a_table_larger_than_an_ordinary_form_can_be_imported(lab: Lab) -> None:
    page = ops(lab)
    table = "".join(f"198.18.{n // 256}.{n % 256}\n" for n in range(5000))  # ~75 KB: over 64 KiB
    reply = page.post("/ui/import", {"csrf": page.csrf(), "text": table, "list": "black"})
    assert (reply.status, reply.location) == (303, "/ui/lists")
    assert "Imported: 5000 added, 0 already present." in page.get("/ui/lists").text
    assert lab.answer("198.18.19.135") == "127.0.0.3"
    big = page.post(
        "/ui/lists/add", {"csrf": page.csrf(), "list": "black", "kind": "ip", "value": "x" * 70_000}
    )
    assert big.status == 413  # the other forms take an ordinary form's size


def test_editing_and_removing_an_entry_is_audited_and_reaches_dns(lab: Lab) -> None:
    page = ops(lab)
    form = {"csrf": page.csrf(), "list": "white", "kind": "ip", "value": "203.0.113.7", "reason": "first"}
    assert page.post("/ui/lists/add", form).status == 303
    assert lab.answer("203.0.113.7") == "NXDOMAIN" and lab.answer("203.0.113.7", WL) == "127.0.0.2"
    listing = page.get("/ui/lists?q=203.0.113.7&kind=ip").text
    entry_id = re.search(r'id="entry-(\d+)"', listing)
    assert entry_id
    edit = f"/ui/lists/{entry_id.group(1)}"
    reply = page.post(f"{edit}/edit", {"csrf": page.csrf(), "reason": "partner relay", "expires": "30d"})
    assert reply.status == 303
    assert "partner relay" in page.get(f"{edit}/edit").text
    bad = page.post(f"{edit}/edit", {"csrf": page.csrf(), "reason": "x", "expires": "yesterday"})
    assert bad.status == 422 and "expires" in bad.text
    assert page.post(f"{edit}/remove", {"csrf": page.csrf(), "back": "/ui/lists"}).status == 303
    assert lab.answer("203.0.113.7", BL) == "127.0.0.2"
    audit = page.get(f"/ui/audit?q=%23{entry_id.group(1)}").text
    for action in ("entry.add", "entry.update", "entry.remove"):
        assert action in audit
    assert audit.count("token:ops") >= 3


def test_export_downloads_a_list_as_a_file(lab: Lab) -> None:
    page = ops(lab)
    reply = page.get("/ui/export?format=postfix&list=white")
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/plain")
    assert reply.headers["content-disposition"] == 'attachment; filename="s25rbl-whitelist.txt"'
    assert "hotmail" in reply.text and " OK" in reply.text
    assert page.get("/ui/export?format=xml").status == 422


def test_every_page_stays_under_100_kb_with_the_longest_values_the_store_takes(lab: Lab) -> None:
    assert lab.server.api is not None
    api = Api(*lab.server.api, token=lab.admin)
    long_reason = "r" * 255
    entries = [
        {
            "list": "black",
            "kind": "regex",
            "value": f"^{i:03d}" + "a" * 490 + r"\.example$",
            "reason": long_reason,
        }
        for i in range(60)
    ]
    assert api.post("/v1/entries", {"entries": entries}).status == 201
    for n in range(25):  # learned addresses with the longest evidence a report may carry
        ip = f"192.0.2.{100 + n}"  # no PTR in the tests' DNS: listed by rule 0, so learnable
        long = {"client_name": "n" * 240 + ".example", "helo": "h" * 255, "sender": "s" * 500 + "@x.example"}
        for k in range(5):  # a request each: one batch is one attempt, whatever its size
            report = {
                "client_ip": ip,
                **long,
                "recipient": "r" * 490 + "@example.org",
                "idempotency_key": f"long-{n}-{k}",
            }
            assert lab.reporter.post("/v1/reports", {"reports": [report]}).status == 202
        api.delete(f"/v1/learned/192.0.2.{200 + n}?forbid=true&reason={long_reason}")
    page = ops(lab)
    learned = page.get("/ui/review/learned").text
    assert "192.0.2.124" in learned and learned.count('class="card"') == 20  # a full page, newest first
    for path in PAGES:
        reply = page.get(path)
        assert reply.status == 200, path
        assert len(reply.body) < 100 * 1024, f"{path} is {len(reply.body)} bytes"


def test_the_page_works_on_each_store_backend(server: RunningServer) -> None:
    assert server.api is not None
    admin = make_token(server, "ops", "admin")
    page = Browserless(*server.api)
    assert page.sign_in(admin).status == 303
    for path in PAGES:
        assert page.get(path).status == 200, path
    form = {"csrf": page.csrf(), "list": "black", "kind": "domain", "value": "bad.example", "reason": "spam"}
    assert page.post("/ui/lists/add", form).status == 303
    assert "bad.example" in page.get("/ui/lists?q=bad").text
    assert "entry.add" in page.get("/ui/audit?q=bad.example").text


def flashes(page: Browserless, path: str) -> list[str]:
    found = re.findall(r'<p class="flash \w+" role="\w+">([^<]*)</p>', page.get(path).text)
    return [html.unescape(text) for text in found]


def test_rejecting_a_pool_suggestion_is_audited_and_only_once(lab: Lab) -> None:
    (ip_a, host_a), (ip_b, host_b) = POOL2
    lab.report(ip_a, host_a, 2, sender="invoices@billing.example", key="reject-a")
    assert lab.report(ip_b, host_b, 1, sender="invoices@billing.example", key="reject-b")["suggested"]
    page = ops(lab)
    listing = page.get("/ui/review/suggestions").text
    found = re.search(r'action="/ui/suggestions/(\d+)/reject"', listing)
    assert found and "isp-b.example" in listing
    reject = f"/ui/suggestions/{found.group(1)}/reject"
    assert page.post(reject, {"csrf": page.csrf(), "back": "/ui/review/suggestions"}).status == 303
    assert flashes(page, "/ui/review/suggestions?status=rejected") == [
        "Suggestion to whitelist pool.isp-b.example rejected."
    ]
    page.post(reject, {"csrf": page.csrf(), "back": "/ui/review/suggestions"})
    assert flashes(page, "/ui/review/suggestions") == [f"suggestion {found.group(1)} is already rejected"]
    assert lab.answer(ip_a) == "127.0.0.2"  # nothing whitelisted
    assert "suggestion.reject" in page.get("/ui/audit?q=isp-b.example").text


def test_a_forbidden_address_is_never_learned(lab: Lab) -> None:
    ip, host = SPARE
    page = ops(lab)
    form = {"csrf": page.csrf(), "ip": ip, "reason": "a bot that retries", "back": "/ui/review/forbidden"}
    assert page.post("/ui/learned/forbid", form).status == 303
    forbidden = page.get("/ui/review/forbidden").text
    assert f"{ip} is forbidden: it will not be learned." in forbidden and "a bot that retries" in forbidden
    assert lab.report(ip, host, 4, sender="x@bot.example", key="forbidden")["learned"] == []
    assert lab.answer(ip, WL) == "NXDOMAIN"
    bad = {"csrf": page.csrf(), "ip": "not-an-address", "back": "/ui/review/forbidden"}
    page.post("/ui/learned/forbid", bad)
    assert flashes(page, "/ui/review/forbidden") == [
        "address: 'not-an-address' is not an IPv4 or IPv6 address"
    ]
    assert "learned.forbid" in page.get(f"/ui/audit?q={ip}").text
