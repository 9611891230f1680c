"""The index page links exactly the routes that need no token."""

from __future__ import annotations

import re

import pytest

from s25rbl.api.index import render


@pytest.mark.parametrize(
    ("metrics_public", "links"),
    [
        (True, {"/v1/openapi.yaml", "/healthz", "/readyz", "/metrics"}),
        (False, {"/v1/openapi.yaml", "/healthz", "/readyz"}),
    ],
    ids=["metrics-public", "metrics-need-a-token"],
)
def test_index_links_only_open_routes(metrics_public: bool, links: set[str]) -> None:
    page = render(metrics_public)
    assert set(re.findall(r'href="([^"]+)"', page)) == links
    assert "<script" not in page and "<style" not in page
