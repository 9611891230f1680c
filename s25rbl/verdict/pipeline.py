"""The verdict of product §4, in order: the first step that decides wins.

Steps 1-3 need memory only; step 4 needs the reverse lookup (often cached); steps 5-9 work on
its result. ``decide_fast`` returns a verdict without awaiting when it can, so the responder
answers most queries without scheduling a task.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from s25rbl.clock import Clock, SystemClock
from s25rbl.entries import EntryRow, IPAddress
from s25rbl.resolve.rdns import ReverseLookup
from s25rbl.verdict.lists import ListIndex, to_match
from s25rbl.verdict.model import Code, Match, RdnsResult, Step, Verdict

log = logging.getLogger(__name__)

TEST_LISTED = ipaddress.IPv4Address("127.0.0.2")
TEST_UNLISTED = ipaddress.IPv4Address("127.0.0.1")


class HitCounter:
    """Entry hits counted in memory and written in batches, never a write per query.

    A hit costs two dict updates and a monotonic clock read (answer-cache hits count too);
    the wall-clock time of each entry's last hit is worked out when a batch is taken.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._counts: dict[int, int] = {}
        self._last: dict[int, float] = {}  # clock.monotonic() of the last hit

    def hit(self, match: Match | None) -> None:
        if match is not None:
            self.hit_entry(match.entry_id)

    def hit_entry(self, entry_id: int) -> None:
        counts = self._counts
        counts[entry_id] = counts.get(entry_id, 0) + 1
        self._last[entry_id] = self._clock.monotonic()

    def take(self) -> dict[int, tuple[int, datetime]]:
        counts, last = self._counts, self._last
        self._counts, self._last = {}, {}
        now, mono = self._clock.now(), self._clock.monotonic()
        return {i: (n, now - timedelta(seconds=mono - last[i])) for i, n in counts.items()}

    def restore(self, batch: dict[int, tuple[int, datetime]]) -> None:
        """Put back a batch that could not be written, merged with hits counted since."""
        now, mono = self._clock.now(), self._clock.monotonic()
        for entry_id, (count, last) in batch.items():
            self._counts[entry_id] = self._counts.get(entry_id, 0) + count
            if entry_id not in self._last:
                self._last[entry_id] = mono - (now - last).total_seconds()


class VerdictEngine:
    def __init__(
        self,
        lists: Callable[[], ListIndex],
        rdns: ReverseLookup,
        *,
        tempfail_ttl: int = 30,
        ip_literal_names: bool = False,
        clock: Clock | None = None,
    ) -> None:
        self.lists = lists  # the current snapshot; a new object whenever the lists change
        self.rdns = rdns
        self._tempfail_ttl = tempfail_ttl
        self._ip_literal_names = ip_literal_names
        self.clock = clock or SystemClock()
        self.hits = HitCounter(self.clock)

    def decide_fast(self, ip: IPAddress) -> Verdict | None:
        """The verdict if it needs no waiting (lists, test entries, cached lookup), else None."""
        early = self._before_lookup(ip)
        if early is not None:
            return early
        rdns = self.rdns.cached(ip)
        if rdns is None:
            return None
        return self._after_lookup(ip, rdns, cached=True)

    async def decide(self, ip: IPAddress) -> Verdict:
        early = self._before_lookup(ip)
        if early is not None:
            return early
        return await self.decide_after_lists(ip)

    async def decide_after_lists(self, ip: IPAddress) -> Verdict:
        """Steps 4-9 only: for a caller to whom ``decide_fast`` just returned None, so steps
        1-3 have already found nothing (not repeated: they cost as much as the rest)."""
        rdns, cached = await self.rdns.lookup(ip)
        return self._after_lookup(ip, rdns, cached=cached)

    def decide_name(self, name: str) -> Verdict:
        """The verdict on a hostname as given (product §3a): no lookups, memory only.

        For MTAs that already did the reverse and forward lookups themselves. The order is
        the address verdict's from step 5 on: whitelist, blacklist, rules.
        """
        name = name.lower().rstrip(".")
        if name == "test":  # RFC 5782 domain-list test entries
            return Verdict(Code.S25R, Step.TEST_ENTRY, name, rule="test")
        if name == "invalid":
            return Verdict(Code.NOT_LISTED, Step.TEST_ENTRY, name)
        literal = _ip_literal(name)
        if literal is not None:
            # An address where a name should be (HELO [192.0.2.1], or a client without a
            # name): judged as rule 0 judges a client without a confirmed name, if wanted.
            code = Code.NO_RDNS if self._ip_literal_names else Code.NOT_LISTED
            return Verdict(code, Step.IP_LITERAL, name)
        lists = self.lists()
        match = lists.white_name((name,))
        if match is not None:
            return self._decided(Verdict(Code.NOT_LISTED, Step.WHITELIST_NAME, name, match=match))
        match = lists.black_name((name,))
        if match is not None:
            return self._decided(Verdict(Code.BLACKLIST, Step.BLACKLIST_NAME, name, match=match))
        hit = lists.rules.match(name)
        if hit is None:
            return Verdict(Code.NOT_LISTED, Step.CLEAN, name)
        label, _pattern, row = hit
        match = to_match(row, name) if row is not None else None
        self.hits.hit(match)
        return Verdict(Code.S25R, Step.S25R_RULE, name, rule=label, match=match)

    # --- the steps -----------------------------------------------------------------------

    def _before_lookup(self, ip: IPAddress) -> Verdict | None:
        if ip == TEST_LISTED:
            return Verdict(Code.S25R, Step.TEST_ENTRY, str(ip), rule="test")
        if ip == TEST_UNLISTED:
            return Verdict(Code.NOT_LISTED, Step.TEST_ENTRY, str(ip))
        lists = self.lists()
        match = lists.white_address(ip)  # 1. operator whitelist by IP or CIDR
        if match is not None:
            return self._decided(Verdict(Code.NOT_LISTED, Step.WHITELIST_ADDRESS, str(ip), match=match))
        match = lists.black_address(ip)  # 2. operator blacklist by IP or CIDR
        if match is not None:
            return self._decided(Verdict(Code.BLACKLIST, Step.BLACKLIST_ADDRESS, str(ip), match=match))
        match = lists.learned_address(ip)  # 3. learned from retries
        if match is not None:
            return self._decided(Verdict(Code.NOT_LISTED, Step.LEARNED, str(ip), match=match))
        return None

    def _after_lookup(self, ip: IPAddress, rdns: RdnsResult, *, cached: bool) -> Verdict:
        address = str(ip)
        if rdns.tempfail:  # 4. the reverse lookup failed for now: say so, briefly
            return Verdict(
                Code.TEMPFAIL, Step.RDNS_TEMPFAIL, address, rdns=rdns, cached=cached, ttl=self._tempfail_ttl
            )
        lists = self.lists()
        # 5. whitelist by name: only forward-confirmed names may grant anything.
        match = lists.white_name(rdns.confirmed)
        if match is not None:
            return self._decided(
                Verdict(Code.NOT_LISTED, Step.WHITELIST_NAME, address, match=match, rdns=rdns, cached=cached)
            )
        # 6. blacklist by name: any PTR name counts, confirmed or not, since a name claimed
        # by the address's owner can only hurt that owner.
        match = lists.black_name(rdns.confirmed + tuple(n for n in rdns.names if n not in rdns.confirmed))
        if match is not None:
            return self._decided(
                Verdict(Code.BLACKLIST, Step.BLACKLIST_NAME, address, match=match, rdns=rdns, cached=cached)
            )
        if not rdns.confirmed:  # 7. rule 0: no PTR, or none resolves back
            return Verdict(Code.NO_RDNS, Step.NO_CONFIRMED_NAME, address, rdns=rdns, cached=cached)
        # 8. S25R rules: listed only if every confirmed name looks dynamic; one proper name
        # among them is what a real mail server with several PTRs has.
        first: tuple[str, str, EntryRow | None] | None = None
        for name in rdns.confirmed:
            hit = lists.rules.match(name)
            if hit is None:
                return Verdict(Code.NOT_LISTED, Step.CLEAN, address, rdns=rdns, cached=cached)
            if first is None:
                first = (hit[0], name, hit[2])
        assert first is not None
        label, name, row = first
        match = None
        if row is not None:
            match = to_match(row, name)
            self.hits.hit(match)
        return Verdict(Code.S25R, Step.S25R_RULE, address, rule=label, match=match, rdns=rdns, cached=cached)

    def _decided(self, verdict: Verdict) -> Verdict:
        self.hits.hit(verdict.match)
        return verdict


def _ip_literal(name: str) -> IPAddress | None:
    """``192.0.2.1`` or ``[192.0.2.1]`` / ``[ipv6:2001:db8::1]`` as written in a HELO."""
    text = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    if text.startswith("ipv6:"):
        text = text[5:]
    if not text or not (text[0].isdigit() or ":" in text):
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
