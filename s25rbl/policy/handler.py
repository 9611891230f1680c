"""One policy request in, one action out: the verdict from the node's engine, the state from
memory or the store, the decision from ``decide``; its state change applied, counted, logged.

``handle`` answers at once (a plain string) whenever the verdict and the state are in memory,
which is nearly always; otherwise it returns an awaitable. Whatever goes wrong, the answer is
DUNNO (fail open): the MTA never waits on s25rbl's trouble, and never gets a rejection it
did not earn.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable
from typing import NamedTuple

from s25rbl.clock import Clock
from s25rbl.config import PolicySettings
from s25rbl.errors import PolicyRequestError, StoreUnavailable
from s25rbl.policy import decide
from s25rbl.policy.counters import PolicyCounters
from s25rbl.policy.decide import (
    DUNNO,
    RCPT,
    ClientTarpit,
    Decision,
    Effect,
    Mode,
    Outcome,
    Session,
    Triplet,
    TripletState,
)
from s25rbl.policy.protocol import PolicyRequest, answer, read_request
from s25rbl.policy.quick import KnownClients
from s25rbl.policy.state import PolicyState
from s25rbl.service.policy import SeenPass, SessionWent, TarpitStarted, TripletWrite
from s25rbl.verdict.model import Code, Step, Verdict
from s25rbl.verdict.pipeline import VerdictEngine

log = logging.getLogger(__name__)

BAD_LOG_EVERY = 60.0  # seconds: bad requests of one kind are logged once per interval
DUNNO_ANSWER = answer(DUNNO)
FAIL_OPEN = Decision(DUNNO, Outcome.FAIL_OPEN, "the policy state is unavailable: let it through")


class _Need(NamedTuple):
    """The decision needs these reads from the store first: (client or triplet, key) each."""

    reads: tuple[tuple[str, str], ...]


class _Plan(NamedTuple):
    decision: Decision
    triplet: Triplet | None = None
    state: TripletState | None = None  # the triplet as decided on


class PolicyHandler:
    """Answers requests for one node."""

    def __init__(
        self,
        engine: VerdictEngine,
        state: PolicyState,
        settings: PolicySettings,
        clock: Clock,
        counters: PolicyCounters | None = None,
    ) -> None:
        self.engine = engine
        self.state = state
        self.settings = settings
        self.mode = Mode(settings.mode)
        self.clock = clock
        self.counters = counters or PolicyCounters()
        self._bad_logged: dict[str, tuple[float, int]] = {}  # kind -> (logged at, suppressed since)
        self.known = KnownClients(engine.lists, engine.clock.monotonic, engine.hits.hit)

    def quick(self, data: bytes) -> bytes | None:
        """The answer to ``data``, one whole request about a client known to be unlisted
        (``s25rbl.policy.quick``), counted; None: it needs the full path."""
        stage = self.known.stage(data)
        if stage is None:
            return None
        self.counters.decided(stage, Outcome.NOT_TREATED)
        return DUNNO_ANSWER

    def handle(self, attributes: dict[str, str], mta: str) -> str | Awaitable[str]:
        """The action for one request (``mta``: the address of the policy client)."""
        try:
            request = read_request(attributes)
        except PolicyRequestError as exc:
            return self.bad_request(exc, mta)
        early = decide.before_verdict(request, self.mode)
        if early is not None:
            return self._settle(request, None, mta, _Plan(early))
        raw = attributes["client_address"]
        verdict = self.known.verdict(raw)  # a client seen a moment ago: as it was judged then
        loaded: dict[str, object] = {}
        if verdict is None:
            verdict = self.engine.decide_fast(request.client)
            if verdict is None:
                return self._slow(request, mta, None, loaded)
            self.known.remember(raw, self.engine.valid_until(request.client, verdict), verdict)
        plan = self._plan(request, verdict, mta, loaded)
        if isinstance(plan, _Need):
            if not self.state.reads_now:
                return self._slow(request, mta, verdict, loaded)
            plan = self._read_now(request, verdict, mta, loaded, plan)
        return self._settle(request, verdict, mta, plan)

    def _read_now(
        self, request: PolicyRequest, verdict: Verdict, mta: str, loaded: dict[str, object], need: _Need
    ) -> _Plan:
        """The plan, reading what it needs by plain calls (SQLite: cheaper than any waiting)."""
        plan: _Plan | _Need = need
        for _ in range(3):
            if not isinstance(plan, _Need):
                return plan
            try:
                for what, key in plan.reads:
                    loaded[key] = self.state.load_now(what, key)
            except StoreUnavailable:
                break
            plan = self._plan(request, verdict, mta, loaded)
        return plan if isinstance(plan, _Plan) else _Plan(FAIL_OPEN)

    def bad_request(self, exc: PolicyRequestError, mta: str) -> str:
        """DUNNO for a request that cannot be judged; logged once a minute per kind."""
        self.counters.bad_requests[exc.kind] += 1
        now = time.monotonic()
        logged, suppressed = self._bad_logged.get(exc.kind, (-BAD_LOG_EVERY, 0))
        if now - logged >= BAD_LOG_EVERY:
            more = f" ({suppressed} more like it since)" if suppressed else ""
            log.warning("policy: bad request from %s answered DUNNO: %s%s", mta, exc, more)
            self._bad_logged[exc.kind] = (now, 0)
        else:
            self._bad_logged[exc.kind] = (logged, suppressed + 1)
        return DUNNO

    async def _slow(
        self, request: PolicyRequest, mta: str, verdict: Verdict | None, loaded: dict[str, object]
    ) -> str:
        if verdict is None:
            verdict = await self.engine.decide_after_lists(request.client)
        for _ in range(3):  # the client's last tarpit and the triplet, at once or one by one
            plan = self._plan(request, verdict, mta, loaded)
            if not isinstance(plan, _Need):
                return self._settle(request, verdict, mta, plan)
            try:
                found = await asyncio.gather(*(self._load(what, key) for what, key in plan.reads))
            except StoreUnavailable:
                break
            loaded.update(zip((key for _, key in plan.reads), found, strict=True))
        return self._settle(request, verdict, mta, _Plan(FAIL_OPEN))

    async def _load(self, what: str, key: str) -> object:
        if what == "client":
            return await self.state.load_client(key)
        return await self.state.load_triplet(key)

    def _plan(
        self, request: PolicyRequest, verdict: Verdict, mta: str, loaded: dict[str, object]
    ) -> _Plan | _Need:
        """The decision, if memory (and what was just read) holds the state it needs."""
        settings = self.settings
        decided = decide.after_verdict(request, verdict, settings)
        if decided is not None:
            return _Plan(decided)
        ip = request.ip
        session = self.state.sessions.get(f"{ip} {request.instance}") if request.instance else None
        triplet: Triplet | None = None
        known: object = None
        if request.stage == RCPT:
            triplet = self._triplet(request, loaded)
            known = loaded.get(triplet.key) or self.state.cached_triplet(triplet.key)
        slot_free = self.state.slot_free(mta)
        client: ClientTarpit | None = None
        if self.mode is not Mode.RGREY and session is None and request.instance:
            found = loaded.get(ip) or self.state.cached_client(ip)
            if found is None:
                reads: tuple[tuple[str, str], ...] = (("client", ip),)
                if triplet is not None and known is None and self._may_greylist(request, slot_free):
                    reads += (("triplet", triplet.key),)  # likely needed next: read both at once
                return _Need(reads)
            client = found if isinstance(found, ClientTarpit) else None
        now = self.clock.now().timestamp()
        if triplet is None:  # DATA, END-OF-MESSAGE
            return _Plan(decide.after_tarpit(request, session, client))
        step = decide.rcpt(
            self.mode, request, session, client, slot_free=slot_free, now=now, tarpit=settings.tarpit
        )
        if isinstance(step, Decision):
            return _Plan(step, triplet if step.effect is Effect.START_TARPIT else None)
        if known is None:
            return _Need((("triplet", triplet.key),))
        state = known if isinstance(known, TripletState) else None
        return _Plan(decide.greylist(state, now, settings, verdict.txt or "", step.reason), triplet, state)

    def _triplet(self, request: PolicyRequest, loaded: dict[str, object]) -> Triplet:
        """The request's triplet, computed once per request (kept in ``loaded`` by a name that
        is no key of the store)."""
        triplet = loaded.get("triplet")
        if not isinstance(triplet, Triplet):
            triplet = Triplet.of(request.client, request.sender, request.recipient, self.settings)
            loaded["triplet"] = triplet
        return triplet

    def _may_greylist(self, request: PolicyRequest, slot_free: bool) -> bool:
        """Whether a listed client's RCPT may end in greylisting whatever its last tarpit."""
        return self.mode is Mode.TARGREY or request.stress or not slot_free

    def _settle(self, request: PolicyRequest, verdict: Verdict | None, mta: str, plan: _Plan) -> str:
        """Apply the plan's state change, count it, log it; the action (DUNNO in a dry run)."""
        decision = plan.decision
        self.counters.decided(request.stage, decision.outcome)
        if decision.effect is not Effect.NONE and verdict is not None:
            self._apply(request, verdict, mta, plan)
        if decision.outcome is Outcome.NOT_TREATED:
            return decision.action
        action = decision.action
        dry = self.settings.dry_run and action != DUNNO
        if dry:
            self.counters.dry_run += 1
            action = DUNNO
        if not log.isEnabledFor(logging.INFO):  # the line's arguments cost as much as a decision
            return action
        log.info(
            "policy: %s[%s] %s from=<%s> to=<%s> instance=%s: %s (%s: %s)%s",
            _own_name(verdict),
            request.client,
            request.stage,
            request.sender,
            request.recipient,
            request.instance or "-",
            decision.action,
            decision.outcome.value,
            decision.reason,
            " dry run: answered DUNNO" if dry else "",
        )
        return action

    def _apply(self, request: PolicyRequest, verdict: Verdict, mta: str, plan: _Plan) -> None:
        state, effect = self.state, plan.decision.effect
        ip, now = request.ip, self.clock.now().timestamp()
        instance = request.instance or f"-{secrets.token_hex(6)}"  # no instance: no session scope
        seen: SeenPass | None = None
        if _teaches(verdict) and not self.settings.dry_run:
            # A pass teaches only when s25rbl itself lists the client by its own lookups (never
            # a blacklisted one), and never in a dry run, where nobody waited or retried.
            kind = "tarpit" if effect is Effect.DELIVER else "greylist"
            name = _own_name(verdict)
            seen = SeenPass(kind, ip, instance, name, request.helo, request.sender, request.recipient, True)
        triplet = plan.triplet
        if effect is Effect.START_TARPIT:
            state.remember_tarpit(ip, instance, mta, now)
            name = _own_name(verdict)
            state.write(TarpitStarted(ip, instance, now, name, request.sender, request.recipient, mta))
            if triplet is not None:  # the session's first attempt, should it hang up
                state.write(_triplet_write("create", triplet, ip, now))
                state.triplets.pop(triplet.key)  # read again when needed: created, or older
        elif effect in (Effect.CREATE_TRIPLET, Effect.RESET_TRIPLET) and triplet is not None:
            state.remember_triplet(triplet.key, TripletState(now, None))
            kind = "create" if effect is Effect.CREATE_TRIPLET else "reset"
            state.write(_triplet_write(kind, triplet, ip, now))
        elif effect is Effect.PASS_TRIPLET and triplet is not None and plan.state is not None:
            state.remember_triplet(triplet.key, TripletState(plan.state.first_seen, now))
            state.write(TripletWrite("pass", triplet.key, now, seen=seen))
        elif effect is Effect.TOUCH_TRIPLET and triplet is not None and state.should_touch(triplet.key):
            state.write(TripletWrite("touch", triplet.key, now))
        elif effect is Effect.SURVIVE:
            state.remember_session(ip, instance, Session.SURVIVED)
            state.write(SessionWent("survive", ip, instance, now))
        elif effect is Effect.DELIVER:
            state.remember_session(ip, instance, Session.DELIVERED)
            state.write(SessionWent("deliver", ip, instance, now, seen=seen))


def _triplet_write(kind: str, triplet: Triplet, ip: str, now: float) -> TripletWrite:
    return TripletWrite(kind, triplet.key, now, triplet.network, triplet.sender, triplet.recipient, ip)


def _teaches(verdict: Verdict) -> bool:
    """A pass of this client counts towards learning: s25rbl lists it by an S25R rule or for
    want of a confirmed name (.2, .4), not by the operator's blacklist or the RFC 5782 entry."""
    return verdict.code in (Code.S25R, Code.NO_RDNS) and verdict.step is not Step.TEST_ENTRY


def _own_name(verdict: Verdict | None) -> str:
    """The client's first forward-confirmed name by s25rbl's own lookups, or ``unknown``."""
    if verdict is None or verdict.rdns is None or not verdict.rdns.confirmed:
        return "unknown"
    return verdict.rdns.confirmed[0]
