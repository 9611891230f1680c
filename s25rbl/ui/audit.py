"""Audit: who changed what, when; newest first, searchable, for tokens with the admin scope
(as ``GET /v1/audit``)."""

from __future__ import annotations

from aiohttp import web

from s25rbl.ui.base import before_param, query_text, render, view
from s25rbl.ui.context import ui_of

PAGE = 50


@view("admin")
async def audit(request: web.Request) -> web.StreamResponse:
    text = query_text(request, "q")
    chosen = query_text(request, "action", 32)
    page, actions = await ui_of(request).api.services.browse.audit(
        text=text or None, action=chosen or None, before_id=before_param(request), limit=PAGE
    )
    return render(
        request,
        "audit.html",
        q=text,
        action=chosen,
        actions=actions,
        events=page.rows,
        older=page.next_before,
        window_ended=page.window_ended,
    )


def setup(app: web.Application) -> None:
    app.router.add_get("/audit", audit)
