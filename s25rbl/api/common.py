"""What every route module needs: the node's parts, and ids from the path."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from s25rbl.api.problems import Problem

if TYPE_CHECKING:
    from s25rbl.app import Parts


def parts_of(request: web.Request) -> Parts:
    from s25rbl.app import PARTS  # the app imports the routes: resolve at call time

    return request.app[PARTS]


def path_id(request: web.Request, what: str) -> int:
    """The ``{id}`` of the path; anything but a plain ASCII number is simply not found."""
    text = request.match_info["id"]
    # isascii: str.isdigit() is true for "²", which int() refuses.
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise Problem(404, f"no {what} with id {text!r}")
    return int(text)
