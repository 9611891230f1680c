"""openapi.yaml describes exactly the routes the app registers, and is a valid OpenAPI 3.1 document."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from s25rbl.api.app import setup_routes
from s25rbl.api.auth import OPEN_PATHS
from s25rbl.api.observe import spec_path

SPEC = Path(__file__).resolve().parents[2] / "openapi.yaml"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(SPEC.read_text(encoding="utf-8"))
    return document


def _normalise(path: str) -> str:
    """``/v1/entries/{id}`` and ``/v1/entries/{entry_id}`` are the same route."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def app_routes() -> set[tuple[str, str]]:
    app = web.Application()
    setup_routes(app)
    routes: set[tuple[str, str]] = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue  # aiohttp adds HEAD to every GET route on its own
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        assert path, f"a route without a path: {route!r}"
        routes.add((route.method.lower(), _normalise(path)))
    return routes


def spec_operations(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, _normalise(path)): operation
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


def test_the_spec_is_the_one_the_app_serves() -> None:
    assert spec_path().resolve() == SPEC


def test_every_route_is_in_the_spec_and_the_reverse(spec: dict[str, Any]) -> None:
    in_app = app_routes()
    in_spec = set(spec_operations(spec))
    assert ("get", "/v1/entries/{}") in in_app  # the inspection itself works
    missing = sorted(in_app - in_spec)
    extra = sorted(in_spec - in_app)
    assert not missing, f"routes the app serves that openapi.yaml lacks: {missing}"
    assert not extra, f"operations in openapi.yaml the app does not serve: {extra}"


def test_the_document_is_valid_openapi_3_1(spec: dict[str, Any]) -> None:
    from openapi_spec_validator import OpenAPIV31SpecValidator

    assert spec["openapi"].startswith("3.1.")
    errors = [str(e.message) for e in OpenAPIV31SpecValidator(spec).iter_errors()]
    assert not errors, errors


def _resolve(spec: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = spec
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def test_every_operation_is_named_summarised_and_secured(spec: dict[str, Any]) -> None:
    assert spec["security"] == [{"bearerAuth": []}]
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        **spec["components"]["securitySchemes"]["bearerAuth"],
        "type": "http",
        "scheme": "bearer",
    }
    ids = []
    for (method, path), operation in spec_operations(spec).items():
        where = f"{method.upper()} {path}"
        assert operation.get("operationId"), f"{where}: no operationId"
        assert operation.get("summary"), f"{where}: no summary"
        ids.append(operation["operationId"])
        security = operation.get("security", spec["security"])
        secured = any(requirement for requirement in security)
        responses = operation["responses"]
        if secured:
            assert "401" in responses and "403" in responses, f"{where}: secured, but no 401/403"
        for status, response in responses.items():
            if int(status) >= 400 and (method, path) != ("get", "/readyz"):
                # /readyz answers its 503 with the same readiness body as its 200, for probes.
                content = _resolve(spec, response).get("content", {})
                assert PROBLEM in content, f"{where}: {status} is not {PROBLEM}"
    assert len(ids) == len(set(ids)), "operationIds must be unique"


def test_only_the_open_routes_are_open(spec: dict[str, Any]) -> None:
    open_ = {path for (method, path), op in spec_operations(spec).items() if op.get("security") == []}
    assert open_ == {"/", "/healthz", "/readyz", "/v1/openapi.yaml"}
    assert open_ == OPEN_PATHS  # what the auth middleware lets through without a token
    metrics = spec["paths"]["/metrics"]["get"]["security"]
    assert {} in metrics and {"bearerAuth": []} in metrics  # open unless api.metrics_public = false


def test_route_inspection_notices_a_route_missing_from_the_spec(spec: dict[str, Any]) -> None:
    """The comparison is not vacuous: an extra route shows up as a difference."""
    app = web.Application()

    async def handler(request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_get("/v1/entries/{entry_id}", handler)
    app.router.add_put("/v1/nowhere", handler)
    found = {
        (
            r.method.lower(),
            _normalise(r.resource.get_info().get("path") or r.resource.get_info()["formatter"]),
        )
        for r in app.router.routes()
        if r.method != "HEAD" and r.resource is not None
    }
    assert found - set(spec_operations(spec)) == {("put", "/v1/nowhere")}
