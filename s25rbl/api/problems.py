"""RFC 9457 problem details: every error the API returns names the input and the problem."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from s25rbl.errors import DuplicateEntry, EntryNotFound, InvalidEntry, ListFileError, StoreUnavailable

log = logging.getLogger(__name__)

PROBLEM = "application/problem+json"
TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Invalid input",
    429: "Too many requests",
    500: "Internal error",
    503: "Store unavailable",
}


class Problem(Exception):
    """Raised anywhere in a handler; the middleware turns it into a problem+json response."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        title: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.title = title or TITLES.get(status, "Error")
        self.status = status
        self.detail = detail
        self.errors = errors or []
        self.headers = headers or {}


def problem_response(problem: Problem, instance: str = "") -> web.Response:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
    }
    if instance:
        body["instance"] = instance
    if problem.errors:
        body["errors"] = problem.errors
    return web.Response(
        status=problem.status,
        text=json.dumps(body),
        content_type=PROBLEM,
        headers=problem.headers,
    )


def from_exception(exc: BaseException) -> Problem | None:
    """Map the project's exceptions (and aiohttp's) to problems; None for real bugs."""
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, InvalidEntry):
        return Problem(422, str(exc), errors=[{"field": exc.field, "problem": exc.problem}])
    if isinstance(exc, ListFileError):
        errors = [{"field": f"line {n}", "line": n, "problem": msg} for n, msg in exc.errors]
        return Problem(422, f"nothing imported: {len(exc.errors)} bad line(s)", errors=errors)
    if isinstance(exc, DuplicateEntry):
        return Problem(409, str(exc))
    if isinstance(exc, EntryNotFound):
        return Problem(404, str(exc))
    if isinstance(exc, StoreUnavailable):
        return Problem(503, str(exc), headers={"Retry-After": "5"})
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return Problem(413, "the request body is larger than this endpoint accepts")
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return Problem(405, f"{exc.method} is not allowed here; use {allowed}", headers={"Allow": allowed})
    if isinstance(exc, web.HTTPNotFound):
        return Problem(404, "no such resource")
    if isinstance(exc, web.HTTPException) and exc.status >= 400:
        return Problem(exc.status, exc.reason or "error")
    return None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def problems_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Exception as exc:
        problem = from_exception(exc)
        if problem is None:
            log.exception("internal error in %s %s", request.method, request.path)
            problem = Problem(500, "internal error; the server log has the details")
        return problem_response(problem, request.path)
