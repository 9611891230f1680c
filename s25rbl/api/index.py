"""``GET /``: the operator's page (``/ui/``) when it is on; else a small page that says what
this address serves, open to anyone.

The page names no list, entry, zone, version or setting: only the open routes (the API
description, the probes, ``/metrics`` when it is public), and that the operator's page is off.
"""

from __future__ import annotations

from aiohttp import web

from s25rbl.api.context import context_of

# The page is plain HTML with no script, style or image of its own, so the strictest policy fits.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>s25rbl</title>
</head>
<body>
<h1>s25rbl</h1>
<p>An S25R reputation service: DNS zones that MTAs ask about their clients, and this REST API.</p>
<ul>
<li><a href="/v1/openapi.yaml">/v1/openapi.yaml</a>: the REST API (OpenAPI 3.1). Its other
<code>/v1</code> routes need a token: <code>s25rbl token create</code>.</li>
<li><a href="/healthz">/healthz</a>: the process is alive</li>
<li><a href="/readyz">/readyz</a>: the store is reachable and the lists are loaded</li>
{metrics}</ul>
<p>The operator's page (review what was learned, explain a verdict, edit the lists) is turned
off on this node; with <code>ui.enabled = true</code> it is served at <code>/ui/</code>.</p>
</body>
</html>
"""
_METRICS = '<li><a href="/metrics">/metrics</a>: Prometheus metrics</li>\n'


def render(metrics_public: bool) -> str:
    """The page; ``/metrics`` is linked only when it needs no token."""
    return _PAGE.format(metrics=_METRICS if metrics_public else "")


async def index(request: web.Request) -> web.Response:
    settings = context_of(request).settings
    if settings.ui.enabled:
        return web.Response(status=302, headers={**HEADERS, "Location": "/ui/"})
    page = render(settings.api.metrics_public)
    return web.Response(text=page, content_type="text/html", charset="utf-8", headers=HEADERS)
