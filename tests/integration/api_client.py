"""A tiny HTTP client for API tests: the real server over a real socket, no mocking."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0]


class Api:
    def __init__(self, host: str, port: int, token: str | None = None, timeout: float = 30) -> None:
        self.host, self.port, self.token, self.timeout = host, port, token, timeout

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        content_type: str | None = None,
        token: str | None = "default",
    ) -> Reply:
        headers: dict[str, str] = {}
        use = self.token if token == "default" else token
        if use:
            headers["Authorization"] = f"Bearer {use}"
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if content_type is not None:
            headers["Content-Type"] = content_type
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.request("POST", path, body, **kw)

    def patch(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.request("PATCH", path, body, **kw)

    def delete(self, path: str, **kw: Any) -> Reply:
        return self.request("DELETE", path, **kw)


def make_token(server: Any, name: str, scope: str) -> str:
    """A token created with the real CLI against the server's store (printed once, on stdout)."""
    result = server.cli("token", "create", "--name", name, "--scope", scope)
    assert result.returncode == 0, result.stderr
    return str(result.stdout.strip())
