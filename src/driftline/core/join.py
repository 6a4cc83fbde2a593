"""Join outcomes to predictions by request id, in event time, with a TTL.

Either side may come first. A prediction waits up to ``ttl`` seconds of
event time for its outcome; an early outcome waits as long for its
prediction. Time advances with a *watermark*: the newest event time seen,
less an allowed ``lateness`` for records that arrive slightly out of order.
Each input partition has its own event time (a :class:`Clock`), as a Kafka
Streams task does: a worker that takes over a partition's backlog, or
catches up after a pause, expires that backlog's predictions by the
backlog's own time, not by the time its other partitions have reached.
A prediction still waiting when the watermark passes its deadline becomes an
:class:`~driftline.core.events.Expired` event (label coverage), never a
silent drop. :meth:`JoinBuffer.advance` lets a timer move the watermark
when a partition goes quiet, so pending joins expire on idle partitions too.

After a request is joined or expired, its id is remembered for one more TTL
so that a retried prediction or outcome is counted as a duplicate (or a late
outcome) rather than as a new request.

The buffer keeps its entries in any ``MutableMapping``: a dict here, a
changelog-backed table in the streaming worker. The expiry index is derived
state and :meth:`JoinBuffer.rebuild_index` recreates it from the mapping.
Given an :class:`~driftline.core.indextail.IndexTail`, the index keeps a
bounded number of its items in memory and the rest there (on disk, in the
worker), so that a million pending predictions do not cost a million
index items of memory.

>>> from driftline.core.events import Prediction, Outcome
>>> join = JoinBuffer(ttl=60.0)
>>> [type(e).__name__ for e in join.add_outcome(Outcome("r1", True, 10.0))]
[]
>>> [type(e).__name__ for e in join.add_prediction(Prediction("r1", "m", True, 5.0))]
['PredictionSeen', 'Joined']
>>> [type(e).__name__ for e in join.add_prediction(Prediction("r2", "m", False, 20.0))]
['PredictionSeen']
>>> [type(e).__name__ for e in join.advance(100.0)]
['Expired']
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from driftline.core.events import (
    Duplicate,
    Expired,
    Joined,
    LateOutcome,
    ModelEvent,
    OrphanOutcome,
    Outcome,
    Prediction,
    PredictionSeen,
)
from driftline.core.indextail import IndexItem, IndexTail

_NOTHING: list[ModelEvent] = []  # shared empty result; callers only read it

TAIL_CHUNK = 1024
"""Index items taken back from the tail at once (per partition, in memory meanwhile).

A partition may always keep four chunks of index items in memory, however
small the bound: its share of the bound is never less.
"""

WAITING_PREDICTION = 0  # a prediction waits for its outcome
WAITING_OUTCOME = 1  # an early outcome waits for its prediction
DONE_JOINED = 2  # tombstone: joined, remembered to spot duplicates
DONE_EXPIRED = 3  # tombstone: expired, remembered to spot late outcomes


@dataclass(slots=True)
class Clock:
    """Event time of one input partition, and the expiry index of its entries.

    ``max_time`` is the event time the partition's records have reached,
    ``watermark`` how far event time has moved (``max_time`` less the
    lateness, or further by a timer). ``sides`` are the newest prediction
    and outcome times seen: with ``sync_sides`` (see :class:`JoinBuffer`)
    ``max_time`` is the older of the two, otherwise the newest of all.
    The index holds (deadline, request id) pairs, soonest first. Records
    mostly come in event-time order, so most deadlines come in order too:
    those queue in a FIFO (O(1) each way), the rest in a heap; expiry pops
    the smaller head of the three sources, which is the order one heap
    would give. The third is the tail (an ``IndexTail``), where items over
    the memory bound wait, the soonest of them in ``head`` (a chunk taken
    back, in order; every item still on the tail is at least ``head[-1]``).
    """

    watermark: float = float("-inf")
    max_time: float = float("-inf")
    sides: list[float] = field(default_factory=lambda: [float("-inf"), float("-inf")])
    fifo: deque[IndexItem] = field(default_factory=deque)
    heap: list[IndexItem] = field(default_factory=list)
    head: deque[IndexItem] = field(default_factory=deque)


@dataclass(slots=True)
class Entry:
    """What the buffer remembers about one request id.

    ``deadline`` is when the entry moves on: a waiting entry expires then,
    a tombstone is forgotten then. ``p_pos`` and ``o_pos`` are the input
    positions (:func:`position`) of the last prediction and outcome applied
    to it, -1 when untracked: a record read again after a crash, whose
    effect the entry already holds, is recognised by them and ignored.
    """

    state: int
    deadline: float
    prediction: Prediction | None = None
    outcome: Outcome | None = None
    model_id: str | None = None
    model_version: str | None = None
    extra_outcomes: int = 0
    partition: int = 0
    p_pos: int = -1
    o_pos: int = -1


def position(offset: int, index: int, partition: int) -> int:
    """One int naming a record: its message's offset, its index in the message, the partition.

    Ordered by offset, then index, within one partition. The partition is
    in the low 16 bits: two positions compare only if those match, and a
    record is already applied if its entry's last position of that side is
    of the same partition and at least as far.

    >>> position(7, 2, 3) > position(7, 1, 3) > position(6, 9, 3)
    True
    """
    return (offset << 32) | (index << 16) | partition


class JoinBuffer:
    """Event-time join of predictions and outcomes with TTL expiry."""

    def __init__(
        self,
        ttl: float,
        *,
        lateness: float = 0.0,
        store: MutableMapping[str, Entry] | None = None,
        sync_sides: bool = False,
        index_tail: IndexTail | None = None,
        index_memory: int = 200_000,
        tail_chunk: int = TAIL_CHUNK,
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        self.ttl = ttl
        # Without a tail, the expiry index is all in memory (replay: the
        # entries are too). With one, each partition keeps at most its share
        # of ``index_memory`` items in memory (four tail chunks at least).
        self._tail = index_tail
        if index_tail is not None:
            self._index = self._index_bounded  # type: ignore[method-assign]
        self.index_memory = index_memory
        self._tail_chunk = tail_chunk
        self._index_cap = max(4 * tail_chunk, index_memory)
        # With sync_sides, a partition's event time is the older of its newest
        # prediction and newest outcome: where predictions and outcomes come
        # from two topics read at their own pace (a backlog), the predictions
        # must not run ahead and expire what the outcomes' topic still holds,
        # as a Flink operator takes the least of its inputs' watermarks. A
        # timer lifts a side that is read to its end (see lift()). Replay
        # reads one stream sorted by time and needs none of it.
        self.sync_sides = sync_sides
        self.lateness = lateness
        self.store: MutableMapping[str, Entry] = {} if store is None else store
        # The input partition of the record being processed (see the
        # ``partition`` property): a worker's buffer spans partitions, each
        # with its own clock, and a changelogged store must write each entry
        # to the changelog partition of its request.
        self._part = 0
        self._clocks: dict[int, Clock] = {0: Clock()}
        self._clock = self._clocks[0]
        # The input position of the record being processed (-1: untracked,
        # as in replay), stored in its entry so that the same record read
        # again after a crash changes nothing and emits nothing.
        self.position = -1
        # When a list, advance() appends (deadline, request id, partition)
        # for each event it emits, in order: the worker tags those events by
        # the expired entry rather than by the record that moved time on.
        self.expiry_log: list[tuple[float, str, int]] | None = None
        if store is not None:
            self.rebuild_index()

    def __len__(self) -> int:
        return len(self.store)

    @property
    def partition(self) -> int:
        """The input partition of the records being added now: their entries' and clock's."""
        return self._part

    @partition.setter
    def partition(self, partition: int) -> None:
        if partition != self._part:
            self._part = partition
            self._clock = self.clock(partition)

    def clock(self, partition: int) -> Clock:
        """The clock of ``partition``, new (at minus infinity) if it had none."""
        clock = self._clocks.get(partition)
        if clock is None:
            clock = self._clocks[partition] = Clock()
            self._share_index_memory()
        return clock

    def _share_index_memory(self) -> None:
        share = self.index_memory // max(1, len(self._clocks))
        self._index_cap = max(4 * self._tail_chunk, share)

    def index_size(self) -> tuple[int, int]:
        """Expiry-index items held (in memory, on the tail), stale ones included."""
        memory = tail = 0
        for part, clock in self._clocks.items():
            memory += len(clock.fifo) + len(clock.heap) + len(clock.head)
            if self._tail is not None:
                tail += self._tail.count(part)
        return memory, tail

    @property
    def clocks(self) -> dict[int, Clock]:
        """Every partition's clock (read-only use)."""
        return self._clocks

    @property
    def watermark(self) -> float:
        """The watermark of the current :attr:`partition`."""
        return self._clock.watermark

    def resume(self, partition: int, watermark: float) -> None:
        """Start ``partition``'s event time at least at a saved ``watermark`` (after a restore).

        Nothing expires here; the next record or :meth:`advance` does that.
        """
        clock = self.clock(partition)
        if watermark > clock.watermark:
            clock.watermark = watermark
            t = watermark + self.lateness
            clock.max_time = max(clock.max_time, t)
            sides = clock.sides
            sides[0], sides[1] = max(sides[0], t), max(sides[1], t)

    def forget_partitions(self, partitions: set[int]) -> None:
        """Drop the clocks of partitions this buffer no longer holds (their entries are gone)."""
        for part in partitions:
            if part != self._part:
                self._clocks.pop(part, None)
            else:
                self._clock = self._clocks[part] = Clock()
            if self._tail is not None:
                self._tail.drop(part)
        self._share_index_memory()

    def pending(self) -> int:
        """How many predictions and early outcomes are waiting."""
        return sum(1 for e in self.store.values() if e.state <= WAITING_OUTCOME)

    def rebuild_index(self) -> None:
        """Recreate the expiry indexes from the store (after a restore).

        Also recovers, per partition, the newest event time the entries show,
        so that an idle timer (see :meth:`advance`) expires what a restarted
        worker restored even if no new record comes. Watermarks stay where
        they were: nothing expires here. A store that keeps entries on disk
        hands them over one at a time instead, between :meth:`clear_index`
        and :meth:`finish_index` (see :meth:`index_entry`).
        """
        self.clear_index()
        index = self.index_entry
        for rid, e in self.store.items():
            index(rid, e)
        self.finish_index()

    def clear_index(self) -> None:
        """Empty every partition's expiry index: the first step of :meth:`rebuild_index`."""
        for clock in self._clocks.values():
            clock.fifo.clear()
            clock.heap.clear()
            clock.head.clear()
        if self._tail is not None:
            self._tail.clear()

    def index_entry(self, rid: str, e: Entry) -> None:
        """Index one entry of the store, between :meth:`clear_index` and :meth:`finish_index`."""
        clock = self._clocks.get(e.partition)
        if clock is None:
            clock = self.clock(e.partition)
        heap = clock.heap
        heap.append((e.deadline, rid))  # a heap only once finish_index() is done
        if self._tail is not None and len(heap) > self._index_cap:
            self._tail.put(e.partition, heap)
            heap.clear()
        if self.sync_sides:  # which side got how far is not in the entries: resume() says
            return
        # A tombstone of an expiry lives two TTLs past its prediction, the rest one.
        t = e.deadline - (2 * self.ttl if e.state == DONE_EXPIRED else self.ttl)
        if t > clock.max_time:
            clock.max_time = t

    def finish_index(self) -> None:
        """Order what :meth:`index_entry` gathered; the last step of :meth:`rebuild_index`."""
        for part, clock in self._clocks.items():
            heapq.heapify(clock.heap)
            if not clock.head:
                self._refill(part, clock)
        self._clock = self.clock(self._part)

    def _put(self, rid: str, entry: Entry) -> None:
        entry.partition = self._part
        self.store[rid] = entry
        self._index(entry.deadline, rid)

    def _index(self, deadline: float, rid: str, clock: Clock | None = None, part: int = -1) -> None:
        """Index an entry of ``part`` (the current partition if ``clock`` is None)."""
        item = (deadline, rid)
        if clock is None:
            clock = self._clock
        fifo = clock.fifo
        if not fifo or item >= fifo[-1]:
            fifo.append(item)
        else:
            heapq.heappush(clock.heap, item)

    def _index_bounded(
        self, deadline: float, rid: str, clock: Clock | None = None, part: int = -1
    ) -> None:
        """:meth:`_index` with a tail: spill what is over the partition's share of memory.

        A method of its own, put in place of :meth:`_index` when there is a
        tail, so that a buffer without one (replay) pays nothing for it.
        """
        item = (deadline, rid)
        if clock is None:
            clock, part = self._clock, self._part
        fifo = clock.fifo
        if not fifo or item >= fifo[-1]:
            fifo.append(item)
        else:
            heapq.heappush(clock.heap, item)
        if len(fifo) + len(clock.heap) > self._index_cap:
            self._spill_index(part, clock)

    def _spill_index(self, part: int, clock: Clock) -> None:
        """Move index items over the memory bound to the tail: half the bound stays.

        The ones that go are those expiring last: the FIFO's newest (and the
        whole heap if the FIFO alone is not enough). Every container is
        changed in place: :meth:`_advance` holds them while it re-indexes.
        """
        assert self._tail is not None
        fifo, heap = clock.fifo, clock.heap
        over = len(fifo) + len(heap) - self._index_cap // 2
        moving: list[IndexItem] = []
        if len(fifo) < over:
            moving.extend(heap)
            heap.clear()
            over -= len(moving)
        pop = fifo.pop
        moving.extend([pop() for _ in range(min(over, len(fifo)))])
        head = clock.head
        if head and min(moving) < head[-1]:  # keep every item on the tail >= head[-1]
            moving.extend(head)
            head.clear()
        self._tail.put(part, moving)
        if not head:
            self._refill(part, clock)

    def _refill(self, part: int, clock: Clock) -> None:
        """Take the tail's soonest items of ``part`` back into ``clock.head``."""
        tail = self._tail
        if tail is not None and tail.count(part):
            clock.head.extend(tail.take(part, self._tail_chunk))

    def add_prediction(self, p: Prediction) -> list[ModelEvent]:
        """Take a prediction; return the model events it causes."""
        rid = p.request_id
        store = self.store
        entry = store.get(rid)
        pos = self.position
        out: list[ModelEvent]
        if entry is None:
            # The common case, inlined: this runs once per prediction.
            deadline = p.event_time + self.ttl
            if deadline < self._clock.watermark:
                out = self._expired_on_arrival(rid, p, deadline, pos, -1)
            else:
                store[rid] = Entry(
                    WAITING_PREDICTION, deadline, p, None, None, None, 0, self._part, pos
                )
                self._index(deadline, rid)
                out = [PredictionSeen(p)]
        elif pos >= 0 and entry.p_pos >= pos and not (entry.p_pos ^ pos) & 0xFFFF:
            out = []  # read again after a restart: the entry already holds it
        elif entry.state == WAITING_OUTCOME and p.event_time - entry.deadline > 0:
            # The outcome had given up waiting before this prediction's time:
            # an orphan, whatever order the two arrived in.
            o = entry.outcome
            assert o is not None
            extra = [OrphanOutcome(o.model_id, entry.deadline)] * (1 + entry.extra_outcomes)
            deadline = p.event_time + self.ttl
            if deadline < self._clock.watermark:
                out = [*extra, *self._expired_on_arrival(rid, p, deadline, pos, entry.o_pos)]
            else:
                self._put(rid, Entry(WAITING_PREDICTION, deadline, p, p_pos=pos, o_pos=entry.o_pos))
                out = [*extra, PredictionSeen(p)]
        elif entry.state == WAITING_OUTCOME and entry.deadline - p.event_time > 2 * self.ttl:
            # The outcome came more than a TTL after this prediction: the
            # prediction expired first, and the outcome is late.
            o = entry.outcome
            assert o is not None
            out = [PredictionSeen(p), *self._expire_late(rid, p, o, pos, entry.o_pos)]
        elif entry.state == WAITING_OUTCOME:
            # Inlined (no _put, no max()): in a backlog the outcomes' topic is
            # often read ahead, and then this runs once per joined pair.
            o = entry.outcome
            assert o is not None
            pt, ot = p.event_time, o.event_time
            done = (ot if ot > pt else pt) + self.ttl
            store[rid] = Entry(
                DONE_JOINED,
                done,
                None,
                None,
                p.model_id,
                p.model_version,
                0,
                self._part,
                pos,
                entry.o_pos,
            )
            self._index(done, rid)
            out = [PredictionSeen(p), Joined(p, o)]
            if entry.extra_outcomes:
                # Retried early outcomes are only attributable to a model now.
                dup = Duplicate(p.model_id, p.model_version, "outcome", ot)
                out.extend([dup] * entry.extra_outcomes)
        else:
            out = [Duplicate(p.model_id, p.model_version, "prediction", p.event_time)]
            if pos >= 0:  # remember it, so that reading it again does not count it again
                entry.p_pos = pos
                store[rid] = entry  # write back: the store may be a changelogged table
        t = p.event_time
        clock = self._clock
        if self.sync_sides:
            sides = clock.sides
            if t > sides[0]:
                sides[0] = t
            if sides[1] < t:  # a tie with this side's newest too: capped by the other side
                t = sides[1]
        if t > clock.max_time:
            due = self._observe(t)
            if due:
                out.extend(due)
        return out

    def add_outcome(self, o: Outcome) -> list[ModelEvent]:
        """Take an outcome; return the model events it causes."""
        rid = o.request_id
        store = self.store
        entry = store.get(rid)
        pos = self.position
        out: list[ModelEvent]
        if entry is None:
            deadline = o.event_time + self.ttl
            if deadline < self._clock.watermark:  # event time is past its wait already
                out = [OrphanOutcome(o.model_id, deadline)]
            else:  # inlined _put: once per outcome read before its prediction
                store[rid] = Entry(
                    WAITING_OUTCOME, deadline, None, o, None, None, 0, self._part, -1, pos
                )
                self._index(deadline, rid)
                out = []
        elif pos >= 0 and entry.o_pos >= pos and not (entry.o_pos ^ pos) & 0xFFFF:
            out = []  # read again after a restart: the entry already holds it
        elif entry.state == WAITING_PREDICTION and o.event_time > entry.deadline:
            # Past the TTL in event time: expired, then late, in any arrival order.
            p = entry.prediction
            assert p is not None
            out = self._expire_late(rid, p, o, entry.p_pos, pos)
        elif entry.state == WAITING_PREDICTION and entry.deadline - o.event_time > 2 * self.ttl:
            # An outcome from more than a TTL before its prediction: it gave up.
            out = [OrphanOutcome(o.model_id, o.event_time + self.ttl)]
            self._note_outcome(rid, entry, pos)
        elif entry.state == WAITING_PREDICTION:
            # The common case, inlined: this runs once per joined pair.
            p = entry.prediction
            assert p is not None
            pt, ot = p.event_time, o.event_time
            done = (ot if ot > pt else pt) + self.ttl
            store[rid] = Entry(
                DONE_JOINED,
                done,
                None,
                None,
                p.model_id,
                p.model_version,
                0,
                self._part,
                entry.p_pos,
                pos,
            )
            self._index(done, rid)
            out = [Joined(p, o)]
        elif entry.state == DONE_EXPIRED:
            assert entry.model_id is not None and entry.model_version is not None
            # A deadline is prediction time + ttl; the tombstone lives one more ttl.
            predicted_at = entry.deadline - 2 * self.ttl
            out = [
                LateOutcome(
                    entry.model_id, entry.model_version, o.event_time - predicted_at, o.event_time
                )
            ]
            self._note_outcome(rid, entry, pos)
        elif entry.state == DONE_JOINED:
            assert entry.model_id is not None and entry.model_version is not None
            out = [Duplicate(entry.model_id, entry.model_version, "outcome", o.event_time)]
            self._note_outcome(rid, entry, pos)
        else:  # a retried early outcome: counted once its prediction names the model
            entry.extra_outcomes += 1
            entry.o_pos = pos
            store[rid] = entry  # write back: the store may be a changelogged table
            out = []
        t = o.event_time
        clock = self._clock
        if self.sync_sides:
            sides = clock.sides
            if t > sides[1]:
                sides[1] = t
            if sides[0] < t:  # a tie with this side's newest too: capped by the other side
                t = sides[0]
        if t > clock.max_time:
            due = self._observe(t)
            if due:
                out.extend(due)
        return out

    def _note_outcome(self, rid: str, entry: Entry, pos: int) -> None:
        """Remember the position of an outcome that changed nothing else."""
        if pos >= 0:
            entry.o_pos = pos
            self.store[rid] = entry  # write back: the store may be a changelogged table

    def _expired_on_arrival(
        self, rid: str, p: Prediction, deadline: float, p_pos: int, o_pos: int
    ) -> list[ModelEvent]:
        """A prediction whose deadline event time has already passed: seen and expired at once.

        Expiring it now, as the record's own events, rather than at the next
        :meth:`advance` keeps what :meth:`advance` emits in (deadline, request
        id) order, which is what lets the worker recognise an expiry it
        emitted before a crash (see ``docs/reliability.md``).
        """
        tomb = Entry(DONE_EXPIRED, deadline + self.ttl, None, None, p.model_id, p.model_version)
        tomb.p_pos, tomb.o_pos = p_pos, o_pos
        self._put(rid, tomb)
        return [PredictionSeen(p), Expired(p, deadline)]

    def _expire_late(
        self, rid: str, p: Prediction, o: Outcome, p_pos: int, o_pos: int
    ) -> list[ModelEvent]:
        deadline = p.event_time + self.ttl
        tomb = Entry(DONE_EXPIRED, deadline + self.ttl, None, None, p.model_id, p.model_version)
        tomb.p_pos, tomb.o_pos = p_pos, o_pos
        self._put(rid, tomb)
        late = LateOutcome(p.model_id, p.model_version, o.event_time - p.event_time, o.event_time)
        return [Expired(p, deadline), late]

    def lift(self, partition: int, side: int, time: float) -> list[ModelEvent]:
        """Record that a side of ``partition`` holds nothing older than ``time`` unread.

        Side 0 is the predictions, 1 the outcomes. For a side read to its end
        and quiet: with ``sync_sides`` it no longer holds the partition's
        event time back. Returns what expires.
        """
        clock = self.clock(partition)
        sides = clock.sides
        if time > sides[side]:
            sides[side] = time
        t = min(sides) if self.sync_sides else max(sides[side], clock.max_time)
        if t <= clock.max_time:
            return []
        part = self._part
        self.partition = partition
        try:
            return self._observe(t)
        finally:
            self.partition = part

    def _observe(self, event_time: float) -> list[ModelEvent]:
        clock = self._clock
        if event_time > clock.max_time:
            clock.max_time = event_time
            watermark = event_time - self.lateness
            heap, fifo = clock.heap, clock.fifo
            if (
                (fifo and fifo[0][0] < watermark)
                or (heap and heap[0][0] < watermark)
                or (clock.head and clock.head[0][0] < watermark)
            ):
                return self._advance(self._part, clock, watermark)
            if watermark > clock.watermark:
                clock.watermark = watermark
        return _NOTHING

    def advance(self, watermark: float, partition: int | None = None) -> list[ModelEvent]:
        """Move ``partition``'s event time (every partition's if None) to ``watermark``.

        Expire and forget what is due. Called by data as it arrives, and by a
        timer for idle partitions. A watermark never moves backwards, and a
        partition's entries expire in (deadline, request id) order: an entry
        added with its deadline already passed expires on arrival instead,
        so this order holds over a whole run (the worker relies on it to
        spot re-sent expiries).
        """
        if partition is not None:
            return self._advance(partition, self.clock(partition), watermark)
        out: list[ModelEvent] = []
        for part in sorted(self._clocks):
            out.extend(self._advance(part, self._clocks[part], watermark))
        return out

    def _advance(self, part: int, clock: Clock, watermark: float) -> list[ModelEvent]:
        if watermark <= clock.watermark:
            return []
        clock.watermark = watermark
        out: list[ModelEvent] = []
        log = self.expiry_log
        heap, fifo, head = clock.heap, clock.fifo, clock.head
        store = self.store
        while True:
            if (
                head
                and head[0][0] < watermark
                and (not fifo or head[0] < fifo[0])
                and (not heap or head[0] < heap[0])
            ):
                deadline, rid = head.popleft()
                if not head:
                    self._refill(part, clock)
            elif fifo and fifo[0][0] < watermark and (not heap or fifo[0] <= heap[0]):
                deadline, rid = fifo.popleft()
            elif heap and heap[0][0] < watermark:
                deadline, rid = heapq.heappop(heap)
            else:
                break
            entry = store.get(rid)
            if entry is None or entry.deadline != deadline or entry.partition != part:
                continue  # stale index entry: the request moved on since
            if entry.state == WAITING_PREDICTION:
                p = entry.prediction
                assert p is not None
                tomb = Entry(
                    DONE_EXPIRED, deadline + self.ttl, None, None, p.model_id, p.model_version
                )
                tomb.p_pos, tomb.o_pos, tomb.partition = entry.p_pos, entry.o_pos, part
                store[rid] = tomb
                self._index(tomb.deadline, rid, clock, part)
                out.append(Expired(p, deadline))
            elif entry.state == WAITING_OUTCOME:
                o = entry.outcome
                assert o is not None
                del store[rid]
                out.append(OrphanOutcome(o.model_id, deadline))
            else:
                del store[rid]
                continue
            if log is not None:
                log.append((deadline, rid, part))
        return out


def tag_events(
    evs: list[ModelEvent],
    tag: list[Any],
    expiry_log: list[tuple[float, str, int]] | None,
    out: list[ModelEvent],
    tags: list[list[Any]],
) -> None:
    """Append ``evs``, just returned by a :class:`JoinBuffer`, to ``out``; their tags to ``tags``.

    ``tag`` is ``[source, position, 0]`` of the record that caused them.
    The events the join's expiry emitted come last, one per entry of its
    ``expiry_log`` (which this empties): those are tagged by the entry that
    expired, ``["x<partition>", deadline, request_id]``. Several events of
    one record are numbered. See :data:`driftline.core.wire.Tag`.

    >>> join = JoinBuffer(ttl=10.0)
    >>> join.expiry_log = []
    >>> join.position = position(0, 0, 1)
    >>> _ = join.add_prediction(Prediction("r1", "m", 1, 0.0))
    >>> join.position = position(1, 0, 1)
    >>> evs = join.add_prediction(Prediction("r2", "m", 1, 20.0))
    >>> out, tags = [], []
    >>> tag_events(evs, ["p1", join.position, 0], join.expiry_log, out, tags)
    >>> [type(e).__name__ for e in out], tags
    (['PredictionSeen', 'Expired'], [['p1', 4294967297, 0], ['x0', 10.0, 'r1']])
    """
    n_expired = len(expiry_log) if expiry_log else 0
    own = len(evs) - n_expired
    out.extend(evs)
    if own == 1:
        tags.append(tag)
    elif own:  # one record, several events: numbered, so that each passes the monitors
        src, pos, _ = tag
        tags.extend([[src, pos, i] for i in range(own)])
    if expiry_log:
        tags.extend([[f"x{part}", deadline, rid] for deadline, rid, part in expiry_log])
        expiry_log.clear()
