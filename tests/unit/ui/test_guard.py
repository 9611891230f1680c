"""The page's guard in process: a session lasts only while its token does, and a token that
loses the read scope loses the page (the rest is tested against a real node)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from s25rbl.api.context import ApiContext
from s25rbl.config import UiSettings
from s25rbl.service.tokens import Principal
from s25rbl.ui import create_ui
from s25rbl.ui.context import UiContext
from s25rbl.ui.history import History
from s25rbl.ui.sessions import Sessions


@dataclass
class Tokens:
    """Stands in for the API's token cache: which tokens are valid now, with what scopes."""

    valid: dict[str, frozenset[str]] = field(default_factory=dict)

    async def principal(self, token: str) -> Principal | None:
        granted = self.valid.get(token)
        return None if granted is None else Principal("ops", granted)


@dataclass
class Api:
    tokens: Tokens


@pytest.fixture
async def page() -> AsyncIterator[tuple[TestClient[web.Request, web.Application], Tokens, Sessions]]:
    tokens = Tokens({"good": frozenset({"read", "write"})})
    sessions = Sessions(idle=600, lifetime=3600)
    context = UiContext(
        cast(ApiContext, Api(tokens)), UiSettings(), sessions, History([], size=10, interval=3600)
    )
    app = web.Application()
    app.add_subapp("/ui/", create_ui(context))
    async with TestClient(TestServer(app)) as client:
        yield client, tokens, sessions


async def sign_in(client: TestClient[Any, Any], token: str) -> int:
    form = await (await client.get("/ui/signin")).text()
    nonce = re.search(r'name="nonce" value="([^"]+)"', form)
    assert nonce
    reply = await client.post(
        "/ui/signin", data={"nonce": nonce.group(1), "token": token}, allow_redirects=False
    )
    return reply.status


@pytest.mark.parametrize(
    ("change", "kept"),
    [(None, True), ("revoked", False), ("read-taken", False)],
    ids=["token-still-valid", "token-revoked", "read-scope-gone"],
)
async def test_a_session_lasts_only_while_its_token_grants_read(
    page: tuple[TestClient[Any, Any], Tokens, Sessions], change: str | None, kept: bool
) -> None:
    client, tokens, sessions = page
    assert await sign_in(client, "good") == 303 and len(sessions) == 1
    if change == "revoked":
        del tokens.valid["good"]
    elif change == "read-taken":
        tokens.valid["good"] = frozenset({"report"})
    reply = await client.get("/ui/explain", allow_redirects=False)
    assert (reply.status == 200) is kept
    if not kept:
        assert reply.headers["Location"].startswith("/ui/signin")
        assert len(sessions) == 0  # ended on the server, not just refused once


async def test_signing_in_again_ends_the_browsers_previous_session(
    page: tuple[TestClient[Any, Any], Tokens, Sessions],
) -> None:
    client, _, sessions = page
    assert await sign_in(client, "good") == 303
    jar = client.session.cookie_jar
    first = jar.filter_cookies(client.make_url("/ui/"))["s25rbl_session"].value
    # A second sign-in form posted from the same browser (an old tab, its form cookie set again).
    jar.update_cookies({"s25rbl_signin": "nonce"}, response_url=client.make_url("/ui/"))
    again = await client.post("/ui/signin", data={"nonce": "nonce", "token": "good"}, allow_redirects=False)
    assert again.status == 303
    assert len(sessions) == 1 and sessions.get(first) is None
