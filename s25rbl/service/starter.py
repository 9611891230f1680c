"""The starter whitelist kept current: each release's new entries reach a store once, on the first
start of that release, and never again after the operator removes them.

Each starter domain is offered to a store exactly once (``store.starter``): added as a builtin
white domain entry, or recorded as already present when the operator has that domain on either
list. Offers outlive the entries, so a removal sticks through every later upgrade.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

from s25rbl.clock import Clock
from s25rbl.lists.starter import StarterEntry, load_starter
from s25rbl.lists.values import EntrySource
from s25rbl.store.db import Store
from s25rbl.store.entries import EntryRepository, MetaRepository
from s25rbl.store.starter import StarterRepository
from s25rbl.store.tokens import AuditRepository

log = logging.getLogger(__name__)

# s25rbl 0.1.0 recorded only this mark when it loaded its starter list (once per store, with
# the entries now tagged 0.1.0); a store that has it was offered every 0.1.0 entry already.
# Later releases set it too, so a downgraded 0.1.0 never loads its list a second time.
LOADED_KEY = "builtin_whitelist_loaded_at"
FIRST_RELEASE = "0.1.0"


async def offer_starter(
    store: Store, clock: Clock, entries: Sequence[StarterEntry] | None = None
) -> dict[str, int]:
    """Add the starter entries (the shipped file's by default) that this store was never offered;
    returns how many each release added. Audited as ``starter <release>: N added``."""
    entries = load_starter() if entries is None else entries
    async with store.transaction() as session:
        offered = await StarterRepository(session).offered()
    fresh = [e for e in entries if e.domain not in offered]
    if not fresh:  # the usual start: one read, no write
        return {}
    now = clock.now()
    async with store.transaction() as session:
        starter, meta = StarterRepository(session), MetaRepository(session)
        # The claim is the first statement: a write, so SQLite takes its lock before reading.
        claimed = await starter.claim(((e.domain, e.since) for e in fresh), now)
        mine = [e for e in fresh if e.domain in claimed]
        if not mine:
            return {}  # another node offered them meanwhile
        legacy = await meta.get(LOADED_KEY) is not None or await EntryRepository(session).has_source(
            EntrySource.BUILTIN
        )
        earlier = {e.domain for e in mine if legacy and e.since == FIRST_RELEASE}
        present = await starter.domains_present([e.domain for e in mine]) - earlier
        wanted = [(e.domain, e.reason, e.since) for e in mine if e.domain not in earlier | present]
        added = await starter.add_entries(wanted, now)
        present |= {domain for domain, _, _ in wanted} - added  # written by the operator meanwhile
        await starter.set_outcome(present, "present")
        await starter.set_outcome(earlier, "earlier")
        if added:
            await EntryRepository(session).bump_version(now)
        if await meta.get(LOADED_KEY) is None:
            await meta.set(LOADED_KEY, now.isoformat())
        tally = _tally(mine, added, present)
        audit = AuditRepository(session)
        for release, line in _lines(tally).items():
            await audit.add(now, "s25rbl", "starter.add", release, line)
    for line in _lines(tally).values():
        log.info("%s", line)
    return {release: counts["added"] for release, counts in tally.items()}


def _tally(mine: Sequence[StarterEntry], added: set[str], present: set[str]) -> dict[str, Counter[str]]:
    """What became of each release's offers, releases in order."""
    tally: dict[str, Counter[str]] = {}
    for e in sorted(mine, key=lambda e: _release_key(e.since)):
        if e.domain in added:
            outcome = "added"
        else:
            outcome = "already present" if e.domain in present else "loaded earlier"
        tally.setdefault(e.since, Counter())[outcome] += 1
    return tally


def _lines(tally: dict[str, Counter[str]]) -> dict[str, str]:
    """Per release: ``starter 0.2.0: 75 added, 1 already present``."""
    lines = {}
    for release, counts in tally.items():
        parts = [f"{counts['added']} added"] + [
            f"{counts[k]} {k}" for k in ("already present", "loaded earlier") if counts[k]
        ]
        lines[release] = f"starter {release}: {', '.join(parts)}"
    return lines


def _release_key(release: str) -> tuple[int, ...]:
    return tuple(int(part) for part in release.split("."))
