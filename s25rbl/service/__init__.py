"""The one write path: every change to entries, learned addresses, suggestions and tokens, from
the REST API, the CLI or the operator's page, goes through these services. Each call is one
unit of work on the store, audited with who made it; a change that alters DNS answers then
calls ``changed`` (a running node reloads its lists at once; the CLI has nothing to reload,
servers notice within ``lists.refresh_interval``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from s25rbl.clock import Clock
from s25rbl.config import LearningSettings, PolicySettings
from s25rbl.learning.ingest import Learner
from s25rbl.service.browse import Browse
from s25rbl.service.entries import Lists
from s25rbl.service.learning import Learning
from s25rbl.service.policy import PolicyStore
from s25rbl.service.tokens import Audit, Tokens
from s25rbl.store.db import Store


async def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Services:
    """The services of one store, sharing its clock and its change hook.

    ``learner`` is the running node's: it judges reported addresses with the node's verdict
    engine and keeps the report limits (the composition root builds it). Without one (the
    CLI, a store-only caller) reports are kept as evidence and nothing is learned from them.
    """

    store: Store
    clock: Clock
    learning_settings: LearningSettings = field(default_factory=LearningSettings)
    changed: Callable[[], Awaitable[None]] = _nothing
    learner: Learner | None = None
    policy_settings: PolicySettings = field(default_factory=PolicySettings)

    @property
    def lists(self) -> Lists:
        return Lists(self.store, self.clock, self.changed)

    @property
    def learning(self) -> Learning:
        learner = self.learner or Learner(self.learning_settings, self.clock)
        return Learning(self.store, self.clock, self.changed, learner)

    @property
    def policy(self) -> PolicyStore:
        """The policy service's state: the listener's reads and writes, the operator's views."""
        settings = self.policy_settings
        return PolicyStore(
            self.store,
            self.clock,
            self.learning_settings,
            learn_after=settings.learn_after,
            retry_window=settings.retry_window,
            changed=self.changed,
        )

    @property
    def tokens(self) -> Tokens:
        return Tokens(self.store, self.clock)

    @property
    def audit(self) -> Audit:
        return Audit(self.store, self.clock)

    @property
    def browse(self) -> Browse:
        return Browse(self.store, self.clock)
