"""Group commit: events accepted by the rooms queue here and are written in batches, one
transaction per batch. A single writer assigns stream orderings, so the stream commits
in order and readers never see a gap fill in later. (A writer among several takes them
from a shared sequence instead and announces how far it has persisted:
homeserver/replication.py.)"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Awaitable, Callable

from twisted.internet import defer, reactor

from homeserver import metrics
from homeserver.event import Event
from storage import events as events_store
from storage.database import DatabaseUnavailable
from storage.events import EventRow

if TYPE_CHECKING:
    from storage.database import Database

logger = logging.getLogger(__name__)
MAX_BATCH = 200
_COMMIT_ATTEMPTS = 3  # a batch whose COMMIT was cut off, and did not land, is written again


@dataclass
class _Pending:
    row: EventRow
    event: Event
    done: defer.Deferred


class Persister:
    def __init__(self, db: "Database", on_failure: Callable[[set[str], list[str]], None]) -> None:
        self._db = db
        self._queue: list[_Pending] = []
        self._writing: list[_Pending] = []  # the batch being written
        self._running = False
        self._on_failure = on_failure  # told which rooms' heads are stale and which events died
        self._listeners: list[Callable[[list[Event]], None]] = []
        self._enqueue_hooks: list[Callable[[EventRow, Event], None]] = []
        self._preparers: list[Callable[[list[tuple[EventRow, Event]]], Awaitable[None]]] = []
        self.max_stream_ordering = 0
        self._next_state_group = 0
        self._state_group_stride = 1
        # homeserver.replication.Replication on a writer of several: ids from the shared
        # sequence, and the writer's claim announced in each batch's transaction.
        self.multi_writer = None
        self.last_written = 0  # with several writers: this one's highest committed id
        self.batches = 0
        self._idle_waiters: list[defer.Deferred] = []

    async def start(self) -> None:
        self.max_stream_ordering = await self._db.run(events_store.max_stream_ordering)
        self._next_state_group = await self._db.run(events_store.max_state_group) + 1

    def add_listener(self, fn: Callable[[list[Event]], None]) -> None:
        """Called on the reactor with each committed batch, in stream order."""
        self._listeners.append(fn)

    def add_enqueue_hook(self, fn: Callable[[EventRow, Event], None]) -> None:
        """Called synchronously as each event is queued, while the room head is exactly
        the state after it (push evaluation captures its facts here)."""
        self._enqueue_hooks.append(fn)

    def add_preparer(self, fn: Callable[[list[tuple[EventRow, Event]]], Awaitable[None]]) -> None:
        """Awaited with each batch before it is written; may add to the rows' `extra`."""
        self._preparers.append(fn)

    def allocate_state_group(self) -> int:
        sg = self._next_state_group
        self._next_state_group += self._state_group_stride
        return sg

    def set_state_group_allocation(self, above: int, index: int, stride: int) -> None:
        """Several writers: this one takes the ids congruent to `index` modulo `stride`."""
        self._state_group_stride = stride
        self._next_state_group = above + (index - above) % stride

    def replay(self, events: list[Event]) -> None:
        """Events another process committed: the listeners see them as if written here."""
        self._tell_listeners(events)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def wait_idle(self) -> defer.Deferred:
        """Fires once everything queued so far is written (or failed): for shutdown."""
        if not self._running and not self._queue:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._idle_waiters.append(d)
        return d

    def enqueue(self, row: EventRow, event: Event) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        for hook in self._enqueue_hooks:
            hook(row, event)
        self._queue.append(_Pending(row, event, d))
        if not self._running:
            # Start on the next reactor turn: everything queued by the current
            # synchronous block (a whole createRoom) lands in one batch, and can still
            # be discarded as a unit.
            self._running = True
            reactor.callLater(0, lambda: defer.ensureDeferred(self._drain()))
        return d

    def settled(self, room_id: str) -> defer.Deferred:
        """Fires once every event of the room queued so far is written (or has failed):
        federation reads the state of the room's latest events from the database."""
        return self.settled_where(lambda room: room == room_id)

    def settled_where(self, rooms: Callable[[str], bool]) -> defer.Deferred:
        """The same for every room `rooms` accepts (a writer giving rooms up)."""
        waiting = [p.done for p in self._writing + self._queue if rooms(p.row.room_id)]
        if not waiting:
            return defer.succeed(None)
        done: defer.Deferred = defer.Deferred()
        remaining = [len(waiting)]

        def one(result):
            remaining[0] -= 1
            if remaining[0] == 0:
                done.callback(None)
            return result  # the event's own caller still gets its result
        for d in waiting:
            d.addBoth(one)
        return done

    def pending_event_ids(self, room_id: str) -> set[str]:
        """The room's events queued or being written: built, not yet in the tables."""
        return {p.event.event_id for p in self._pending_in(room_id)}

    def pending_rooms(self) -> set[str]:
        """The rooms with events queued or being written."""
        return {p.row.room_id for p in self._writing + self._queue}

    def _pending_in(self, room_id: str) -> list[_Pending]:
        return [p for p in self._writing + self._queue if p.row.room_id == room_id]

    def discard_room(self, room_id: str) -> None:
        """Fail and drop the not-yet-written events of a room."""
        dropped = [p for p in self._queue if p.row.room_id == room_id]
        self._queue = [p for p in self._queue if p.row.room_id != room_id]
        for p in dropped:
            p.done.errback(RuntimeError(f"events of {room_id} discarded"))

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                self._writing = batch
                await self._write(batch)
        finally:
            self._writing = []
            self._running = False
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                d.callback(None)

    async def _write(self, batch: list[_Pending]) -> None:
        for prepare in self._preparers:
            try:
                await prepare([(p.row, p.event) for p in batch])
            except Exception:
                logger.exception("preparing a batch of %d event(s) failed", len(batch))
        error = await self._commit(batch)
        if error is None:
            return
        if len(batch) > 1:
            # One bad event must not fail its neighbours: write them one by one. An event
            # of a room that already failed fails too (it was built on the failed one).
            logger.warning("a batch of %d events failed (%s); writing them one by one", len(batch), error)
            failed_rooms: set[str] = set()
            for p in batch:
                if p.row.room_id not in failed_rooms:
                    single_error = await self._commit([p])
                    if single_error is None:
                        continue
                    error = single_error
                failed_rooms.add(p.row.room_id)
                self._fail([p], error)
            return
        self._fail(batch, error)

    def _tell_listeners(self, events: list[Event]) -> None:
        for fn in self._listeners:
            try:
                fn(events)
            except Exception:
                logger.exception("persist listener failed")

    def _fail(self, batch: list[_Pending], error: Exception) -> None:
        failed_rooms = {p.row.room_id for p in batch}
        # Events queued behind the failed ones were built on them: fail those too.
        doomed = [p for p in self._queue if p.row.room_id in failed_rooms]
        self._queue = [p for p in self._queue if p.row.room_id not in failed_rooms]
        self._on_failure(failed_rooms, [p.event.event_id for p in batch + doomed])
        for p in batch + doomed:
            p.done.errback(error)

    async def _commit(self, batch: list[_Pending]) -> Exception | None:
        """Write `batch` in one transaction; on success tell the listeners and the senders.
        Returns the error instead when nothing was written."""
        started = time.perf_counter()
        multi = self.multi_writer
        ids: list[int] | None = None
        claim = None
        try:
            if multi is not None:
                ids = await multi.allocate(len(batch))
        except Exception as e:
            logger.warning("allocating stream orderings failed: %s", e)
            multi.finished(None, None)
            metrics.PERSIST_FAILURES.inc()
            return e
        for attempt in range(_COMMIT_ATTEMPTS):
            if ids is None:
                first = self.max_stream_ordering + 1
                for i, p in enumerate(batch):
                    p.row.stream_ordering = first + i
            else:
                for i, p in zip(ids, batch):
                    p.row.stream_ordering = i
            try:
                if multi is None:
                    await self._db.run(events_store.persist_batch, [p.row for p in batch],
                                       int(time.time() * 1000))
                else:
                    claim = multi.pending_claim(ids[-1])
                    await self._db.run(multi.write_batch, [p.row for p in batch],
                                       int(time.time() * 1000), claim)
                break
            except Exception as e:
                if isinstance(e, DatabaseUnavailable) or getattr(e, "quiet", False):
                    logger.warning("persisting %d event(s) failed: %s", len(batch), e)
                else:
                    logger.exception("persisting %d event(s) failed", len(batch))
                # A lost connection during COMMIT leaves the outcome unknown: ask the database.
                try:
                    if multi is None:
                        self.max_stream_ordering = await self._db.run(events_store.max_stream_ordering)
                    landed = await self._db.run(events_store.get_event_position, batch[0].row.event_id)
                except Exception:
                    metrics.PERSIST_FAILURES.inc()
                    if multi is not None:  # unknown outcome: the claim stays below these ids
                        multi.finished(None, None)
                    return e
                if landed is not None:
                    break
                # Not written: a connection cut mid-COMMIT is worth another go, a bad batch is not.
                if not isinstance(e, DatabaseUnavailable) or attempt == _COMMIT_ATTEMPTS - 1:
                    metrics.PERSIST_FAILURES.inc()
                    if multi is not None and ids is not None:
                        multi.finished(ids[-1], None)  # never written: a gap
                    return e
        if multi is None:
            self.max_stream_ordering = max(self.max_stream_ordering, first + len(batch) - 1)
        else:
            multi.finished(ids[-1], claim)
            self.last_written = max(self.last_written, ids[-1])
        self.batches += 1
        metrics.PERSIST_BATCH_DURATION.observe(time.perf_counter() - started)
        metrics.PERSIST_BATCH_SIZE.observe(len(batch))
        metrics.EVENTS_PERSISTED.inc(len(batch))
        events = []
        for p in batch:
            p.event.stream_ordering = p.row.stream_ordering
            events.append(p.event)
        self._tell_listeners(events)
        for p in batch:
            p.done.callback(p.event)
        return None
