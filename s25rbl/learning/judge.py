"""What s25rbl itself says about a reported address when the report arrives: the only verdict
learning goes by (product §5). A reporter's claims (its time, the client name it saw) are
evidence for the operator, never the judge.

The judge is the node's verdict engine, with the same lists and reverse-lookup caches as DNS
(usually warm: the MTA asked about the client moments before it reported the rejection),
handed in by the composition root. Without one (a store-only caller) nothing is judged, so
reports are kept as evidence and nothing is learned.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from s25rbl.verdict.model import Step
from s25rbl.verdict.pipeline import VerdictEngine

log = logging.getLogger(__name__)

NOT_JUDGED = "not-judged"


@dataclass(frozen=True, slots=True)
class Listing:
    """s25rbl's own answer for an address: the blocklist code (0 not listed, 2 S25R rule,
    3 operator blacklist, 4 no confirmed name, 5 lookup failed for now; -1 not judged), the
    deciding step, and the names s25rbl forward-confirmed for it."""

    code: int
    step: str
    names: tuple[str, ...] = ()

    @property
    def counts(self) -> bool:
        """Listed by S25R itself (.2 a rule on its confirmed name, .4 no confirmed name): an
        attempt that may count towards learning. Not the operator's blacklist (.3: it always
        wins), not a lookup that failed for now (.5), not the RFC 5782 test entries."""
        return self.step in (Step.S25R_RULE, Step.NO_CONFIRMED_NAME)

    @property
    def pool_name(self) -> str:
        """The confirmed name a pool suggestion may be judged by ("" if none: only a name a
        rule hit, as a provider's pool of outgoing servers looks to S25R)."""
        return self.names[0] if self.step == Step.S25R_RULE and self.names else ""


UNJUDGED = Listing(-1, NOT_JUDGED)


class Judge(Protocol):
    """Judges one address (canonical text) as the node's DNS would, learning aside."""

    async def __call__(self, ip: str) -> Listing: ...


class EngineJudge:
    """A judge on the node's verdict engine, as if the address were not learned (so that a
    learned address still reported is judged by what would list it without learning)."""

    def __init__(self, engine: VerdictEngine) -> None:
        self._engine = engine

    async def __call__(self, ip: str) -> Listing:
        verdict = await self._engine.decide(ipaddress.ip_address(ip), ignore_learned=True)
        names = verdict.rdns.confirmed if verdict.rdns is not None else ()
        return Listing(int(verdict.code), verdict.step.value, names)


async def judge_all(
    judge: Judge | None, ips: Iterable[str], *, concurrency: int = 16, budget: float = 10.0
) -> dict[str, Listing]:
    """Each distinct address judged once, at most ``concurrency`` at a time (the rest of the
    node's lookups keep their slots), all within ``budget`` seconds: an address not judged by
    then (upstreams down) is UNJUDGED, kept as evidence, counting for nothing."""
    unique = list(dict.fromkeys(ips))
    if judge is None or not unique:
        return dict.fromkeys(unique, UNJUDGED)
    gate = asyncio.Semaphore(concurrency)

    async def one(ip: str) -> Listing:
        async with gate:
            return await judge(ip)

    tasks = {ip: asyncio.ensure_future(one(ip)) for ip in unique}
    done, pending = await asyncio.wait(tasks.values(), timeout=budget)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
        log.warning("%d of %d reported addresses not judged within %g s", len(pending), len(unique), budget)
    listings: dict[str, Listing] = {}
    for ip, task in tasks.items():
        if task in done and task.exception() is None:
            listings[ip] = task.result()
        else:
            if task in done:
                log.error("judging %s failed: %r", ip, task.exception())
            listings[ip] = UNJUDGED
    return listings
