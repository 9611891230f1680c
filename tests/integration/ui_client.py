"""A browser-less client of the operator's page for tests: real HTTP over a real socket, its own
cookie jar, forms posted the way a browser posts them (urlencoded), CSRF tokens read from the
page. The browser tests drive Chromium; this one checks what a browser would not let us send."""

from __future__ import annotations

import http.client
import re
import urllib.parse
from dataclasses import dataclass, field
from http.cookies import SimpleCookie

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
NONCE = re.compile(r'name="nonce" value="([^"]+)"')


@dataclass
class Page:
    status: int
    headers: dict[str, str]
    set_cookies: list[str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def location(self) -> str:
        return self.headers.get("location", "")

    def csrf(self) -> str:
        match = CSRF.search(self.text)
        assert match, "no CSRF token on the page"
        return match.group(1)


@dataclass
class Browserless:
    host: str
    port: int
    cookies: dict[str, str] = field(default_factory=dict)
    extra_headers: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, form: dict[str, str] | None = None, **headers: str) -> Page:
        sent = dict(self.extra_headers)
        sent.update({k.replace("_", "-"): v for k, v in headers.items()})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form).encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=sent)
            response = conn.getresponse()
            set_cookies = response.headers.get_all("Set-Cookie") or []
            page = Page(
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                set_cookies,
                response.read(),
            )
        finally:
            conn.close()
        for line in set_cookies:
            jar: SimpleCookie = SimpleCookie()
            jar.load(line)
            for name, morsel in jar.items():
                if morsel["max-age"] == "0" or not morsel.value:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return page

    def get(self, path: str, **headers: str) -> Page:
        return self.request("GET", path, None, **headers)

    def post(self, path: str, form: dict[str, str], **headers: str) -> Page:
        return self.request("POST", path, form, **headers)

    def sign_in(self, token: str) -> Page:
        """Sign in the way the form does; returns the answer to the POST (303 when it worked)."""
        page = self.get("/ui/signin")
        match = NONCE.search(page.text)
        assert match, page.text
        return self.post("/ui/signin", {"nonce": match.group(1), "token": token, "next": "/ui/review"})

    def csrf(self, path: str = "/ui/review") -> str:
        return self.get(path).csrf()
