"""A node's policy service: the listener, the handler, the state and their background tasks,
started and stopped together (by ``app.serve``)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from s25rbl.clock import Clock
from s25rbl.config import Endpoint, PolicySettings
from s25rbl.errors import StoreUnavailable
from s25rbl.policy.counters import PolicyCounters
from s25rbl.policy.handler import PolicyHandler
from s25rbl.policy.server import PolicyServer
from s25rbl.policy.state import PolicyState
from s25rbl.service.policy import Applied, PolicyReads, PolicyStore
from s25rbl.verdict.pipeline import VerdictEngine

SWEEP_INTERVAL = 1.0  # seconds between counts of tarpits whose session never reached DATA


class PolicyNode:
    """The running policy service of one node."""

    def __init__(
        self,
        settings: PolicySettings,
        engine: VerdictEngine,
        store: PolicyStore,
        clock: Clock,
        *,
        refresh_interval: float,
    ) -> None:
        assert settings.listen is not None, "the policy service is off (policy.listen is empty)"
        self.settings = settings
        self.counters = PolicyCounters()
        self._reads = PolicyReads(store.store)
        self.state = PolicyState(
            store,
            clock,
            tarpit=settings.tarpit,
            max_tarpits=settings.max_tarpits,
            cache_size=settings.cache_size,
            reads=self._reads,
            on_applied=self._applied,
        )
        self.handler = PolicyHandler(engine, self.state, settings, clock, self.counters)
        self.server = PolicyServer(
            self.handler,
            settings.listen,
            idle_timeout=settings.idle_timeout,
            max_connections=settings.max_connections,
            allow=settings.allow,
        )
        self._refresh = refresh_interval
        self._tasks: list[asyncio.Task[None]] = []

    def _applied(self, applied: Applied) -> None:
        self.counters.passes += applied.passes
        self.counters.learned += len(applied.learned)

    async def start(self) -> Endpoint:
        with contextlib.suppress(StoreUnavailable):
            await self.state.poll_generation()  # deletions from now on make this node forget
        bound = await self.server.start()
        self._tasks = [
            asyncio.create_task(self.state.run_writes(), name="policy-writes"),
            asyncio.create_task(self.state.run_generation(self._refresh), name="policy-generation"),
            asyncio.create_task(self._sweep(), name="policy-sweep"),
        ]
        return bound

    async def stop(self) -> None:
        await self.server.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.state.flush()  # what was decided last is not lost
        self._reads.close()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            self.counters.tarpits["abandoned"] += self.state.abandoned_since()

    def figures(self) -> dict[str, Any]:
        """The policy figures of ``/v1/stats``."""
        figures = self.counters.as_json(self.state.tarpits_in_progress(), self.state.dropped)
        figures["mode"] = self.settings.mode
        figures["dry_run"] = self.settings.dry_run
        figures["cached"] = {
            "sessions": len(self.state.sessions),
            "triplets": len(self.state.triplets),
            "clients": len(self.state.clients),
        }
        return figures
