"""What a node keeps of the policy state in memory, and how it reads and writes the rest.

Memory (each bounded in entries of bounded size, so in bytes): the sessions this node
tarpitted, triplets and clients' last tarpits it read or wrote, and the tarpits each MTA is
sitting through. What every node must agree on lives in the store: a miss reads it there
(on PostgreSQL the misses of many requests in one query, ``reads``; on SQLite by a plain call,
``load_now``), and a read that fails or takes longer than ``READ_TIMEOUT`` fails open.
Writes are queued and committed in batches a moment later (a client retries minutes after, on
whichever MX), at most four batches a second, so no answer waits for a commit; while the store
is away they wait in a bounded queue.

A client that has no tarpit record is remembered as such for ``tarpit`` seconds only: a record
another node makes meanwhile is of a session still in its tarpit, which this node would
tarpit too, so the answer is the same either way.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable
from typing import Generic, TypeVar

from s25rbl.clock import Clock
from s25rbl.errors import StoreUnavailable
from s25rbl.policy.decide import ClientTarpit, Session, TripletState, grace
from s25rbl.policy.reads import BatchReader
from s25rbl.service.policy import Applied, PolicyReads, PolicyStore, Write

log = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

READ_TIMEOUT = 2.0  # seconds: well inside Postfix's policy timeout (the shipped 10 s)
DOWN_FOR = 5.0  # after a failed read, fail open at once for this long
FLUSH_DELAY = 0.02  # seconds writes gather before a batch is committed
# ... and at least this long after the previous batch began: a batch costs the event loop
# 1-3 ms of fixed work (the unit of work and its hand-offs to the database), a write in it
# ~35 µs, so under a steady stream of writes few large batches cost far less than many small
# ones. A write after a quiet spell is still committed FLUSH_DELAY after its answer.
FLUSH_INTERVAL = 0.25
MAX_QUEUED = 20_000  # writes waiting for the store (under 2 KiB each); the oldest go beyond
TOUCH_EVERY = 3600.0  # a passed triplet seen again is written back at most this often


class Lru(Generic[K, V]):
    """A dict of at most ``size`` entries; the least recently used goes first."""

    __slots__ = ("_data", "size")

    def __init__(self, size: int) -> None:
        self._data: collections.OrderedDict[K, V] = collections.OrderedDict()
        self.size = size

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        if len(self._data) > self.size:
            self._data.popitem(last=False)

    def pop(self, key: K) -> V | None:
        return self._data.pop(key, None)

    def oldest(self) -> list[tuple[K, V]]:
        """The entries, least recently used first (a copy)."""
        return list(self._data.items())

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


class _Absent:
    """The store has no such row (a cached negative answer)."""


ABSENT = _Absent()


class PolicyState:
    """One node's policy state: memory first, the store behind it."""

    def __init__(
        self,
        store: PolicyStore,
        clock: Clock,
        *,
        tarpit: int,
        max_tarpits: int,
        cache_size: int,
        reads: PolicyReads | None = None,
        on_applied: Callable[[Applied], None] = lambda applied: None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.tarpit = tarpit
        self.max_tarpits = max_tarpits
        self.sessions: Lru[str, Session] = Lru(cache_size)
        self.triplets: Lru[str, tuple[TripletState | _Absent, float]] = Lru(cache_size)  # (state, touched)
        self.clients: Lru[str, tuple[ClientTarpit | _Absent, float]] = Lru(cache_size)  # (record, until)
        self._slots: dict[str, collections.deque[float]] = {}  # per MTA: when its tarpits end
        self._pending: Lru[str, float] = Lru(cache_size)  # tarpits started here: session -> end
        self._reads = reads
        source = reads or store  # the direct reads of a node, or the store's units of work
        self._client_reads = BatchReader(source.read_clients, READ_TIMEOUT)
        self._triplet_reads = BatchReader(source.read_triplets, READ_TIMEOUT)
        self._down_until = 0.0
        self._writes: collections.deque[Write] = collections.deque()
        self._wakeup = asyncio.Event()
        self._on_applied = on_applied
        self.dropped = 0  # writes lost to a long store outage
        self.generation: str | None = None

    # --- memory ------------------------------------------------------------------------------

    def cached_client(self, ip: str) -> ClientTarpit | _Absent | None:
        """The client's last tarpit (ABSENT: none), or None when it must be read."""
        hit = self.clients.get(ip)
        if hit is None:
            return None
        record, until = hit
        if until < self.clock.monotonic():
            self.clients.pop(ip)
            return None
        return record

    def cached_triplet(self, key: str) -> TripletState | _Absent | None:
        hit = self.triplets.get(key)
        return None if hit is None else hit[0]

    def slot_free(self, mta: str) -> bool:
        """Fewer than ``max_tarpits`` of this MTA's sessions sit in a tarpit now."""
        ends = self._slots.get(mta)
        if ends is None:
            return self.max_tarpits > 0
        now = self.clock.monotonic()
        while ends and ends[0] <= now:
            ends.popleft()
        if not ends:
            del self._slots[mta]
        return len(ends) < self.max_tarpits

    def tarpits_in_progress(self) -> int:
        now = self.clock.monotonic()
        return sum(1 for ends in self._slots.values() for end in ends if end > now)

    # --- reads from the store ----------------------------------------------------------------

    @property
    def reads_now(self) -> bool:
        """Misses can be read at once, by a plain call (SQLite): no task, no waiting."""
        return self._reads is not None and self._reads.synchronous

    async def load_client(self, ip: str) -> ClientTarpit | _Absent:
        record = await self._read(self._client_reads, ip)
        return self._remember_client(ip, record)

    async def load_triplet(self, key: str) -> TripletState | _Absent:
        state = await self._read(self._triplet_reads, key)
        return self._remember_triplet(key, state)

    def load_now(self, what: str, key: str) -> ClientTarpit | TripletState | _Absent:
        """``load_client`` or ``load_triplet`` as a plain call (``reads_now``)."""
        assert self._reads is not None
        self._check_up()
        try:
            if what == "client":
                return self._remember_client(key, self._reads.read_client_now(key))
            return self._remember_triplet(key, self._reads.read_triplet_now(key))
        except StoreUnavailable as exc:
            self._went_down(exc)
            raise

    def _remember_client(self, ip: str, record: ClientTarpit | None) -> ClientTarpit | _Absent:
        found: ClientTarpit | _Absent = ABSENT if record is None else record
        # No record: see the module docstring. A record may still change (DATA of its session
        # may come to another node): read it again now and then.
        ttl = float(self.tarpit) if found is ABSENT else 300.0
        self.clients.put(ip, (found, self.clock.monotonic() + ttl))
        return found

    def _remember_triplet(self, key: str, state: TripletState | None) -> TripletState | _Absent:
        found: TripletState | _Absent = ABSENT if state is None else state
        self.triplets.put(key, (found, self.clock.monotonic()))
        return found

    async def _read(self, reader: BatchReader[T], key: str) -> T | None:
        """The row of ``key`` (read with others); StoreUnavailable while the store fails."""
        self._check_up()
        try:
            return await reader.get(key)
        except StoreUnavailable as exc:
            self._went_down(exc)
            raise

    def _check_up(self) -> None:
        if self.clock.monotonic() < self._down_until:
            raise StoreUnavailable("the store failed a moment ago; failing open meanwhile")

    def _went_down(self, exc: StoreUnavailable) -> None:
        if self.clock.monotonic() >= self._down_until:
            log.warning("policy state unreadable, failing open for %g s: %s", DOWN_FOR, exc)
        self._down_until = self.clock.monotonic() + DOWN_FOR

    # --- what decisions change ---------------------------------------------------------------

    def remember_tarpit(self, ip: str, instance: str, mta: str, now: float) -> None:
        """A session sent into the tarpit by this node."""
        self.sessions.put(f"{ip} {instance}", Session.TARPITTED)
        self.clients.put(ip, (ClientTarpit(instance, now, False, False), self.clock.monotonic() + 300.0))
        end = self.clock.monotonic() + self.tarpit
        self._slots.setdefault(mta, collections.deque()).append(end)
        self._pending.put(f"{ip} {instance}", end + grace(self.tarpit))

    def remember_session(self, ip: str, instance: str, session: Session) -> None:
        key = f"{ip} {instance}"
        self.sessions.put(key, session)
        self._pending.pop(key)
        hit = self.cached_client(ip)
        if isinstance(hit, ClientTarpit) and hit.instance == instance:
            delivered = session is Session.DELIVERED
            record = ClientTarpit(instance, hit.started, True, delivered or hit.delivered)
            self.clients.put(ip, (record, self.clock.monotonic() + 300.0))

    def remember_triplet(self, key: str, state: TripletState) -> None:
        self.triplets.put(key, (state, self.clock.monotonic()))

    def should_touch(self, key: str) -> bool:
        """A passed triplet seen again: write its last sight back now and then, not each time."""
        hit = self.triplets.get(key)
        if hit is None or self.clock.monotonic() - hit[1] < TOUCH_EVERY:
            return False
        self.triplets.put(key, (hit[0], self.clock.monotonic()))
        return True

    def abandoned_since(self) -> int:
        """Tarpits this node started whose session never reached DATA: counted once each."""
        now = self.clock.monotonic()
        gone = 0
        for key, end in self._pending.oldest():
            if end >= now:
                break  # entries were added in the order they end
            self._pending.pop(key)
            gone += 1
        return gone

    def forget(self) -> None:
        """Drop what was read from the store (an operator deleted state)."""
        self.triplets.clear()
        self.clients.clear()

    # --- writes to the store -----------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Writes waiting for the store."""
        return len(self._writes)

    def write(self, write: Write) -> None:
        self._writes.append(write)
        if len(self._writes) > MAX_QUEUED:
            self._writes.popleft()
            self.dropped += 1
        self._wakeup.set()

    async def run_writes(self) -> None:
        """Commit queued writes in batches, for as long as the node runs."""
        loop = asyncio.get_running_loop()
        began = -FLUSH_INTERVAL
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await asyncio.sleep(max(FLUSH_DELAY, began + FLUSH_INTERVAL - loop.time()))
            began = loop.time()
            if not await self.flush():
                await asyncio.sleep(DOWN_FOR)
                self._wakeup.set()

    async def flush(self) -> bool:
        """Commit what is queued; False if the store is unavailable (the writes stay queued)."""
        if not self._writes:
            return True
        batch = list(self._writes)
        self._writes.clear()
        try:
            applied = await self.store.apply(batch)
        except StoreUnavailable as exc:
            log.warning("policy state not written, %d writes wait: %s", len(batch), exc)
            self._writes.extendleft(reversed(batch))
            while len(self._writes) > MAX_QUEUED:
                self._writes.popleft()
                self.dropped += 1
            return False
        except Exception:
            log.exception("a batch of %d policy writes failed and was dropped", len(batch))
            self.dropped += len(batch)
            return True
        self._on_applied(applied)
        return True

    async def run_generation(self, interval: float) -> None:
        """Forget cached state whenever an operator deleted some, for as long as the node runs."""
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(StoreUnavailable):
                await self.poll_generation()

    async def poll_generation(self) -> bool:
        """Forget cached state if the generation moved since the last poll; True if it did."""
        generation = await self.store.generation()
        moved = self.generation is not None and generation != self.generation
        if moved:
            log.info("policy state changed by an operator: cached triplets and tarpits forgotten")
            self.forget()
        self.generation = generation
        return moved
