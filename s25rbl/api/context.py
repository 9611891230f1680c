"""What the routes are handed by the composition root: one typed context under one AppKey."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from s25rbl.api.auth import TokenCache
from s25rbl.api.metrics import Metrics
from s25rbl.config import Settings
from s25rbl.node.counters import Snapshot
from s25rbl.node.sync import ListSync
from s25rbl.policy.node import PolicyNode
from s25rbl.service import Services
from s25rbl.verdict.pipeline import VerdictEngine


@dataclass(frozen=True)
class ApiContext:
    """The running node as the API sees it."""

    settings: Settings
    services: Services  # every write goes through these
    engine: VerdictEngine  # explanations use the same engine, lists and caches as DNS
    lists: ListSync
    counters: Callable[[], Snapshot]  # the node's DNS counters, every worker's included
    metrics: Metrics
    tokens: TokenCache
    policy: PolicyNode | None = None  # the running policy service, if policy.listen is set


CONTEXT = web.AppKey("context", ApiContext)


def context_of(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]
