"""Several processes on one PostgreSQL: stream positions and cache invalidations
travel by LISTEN/NOTIFY (never payloads: a reader reads what changed from the tables).

Writers take event stream orderings from a shared sequence and announce their claims
(homeserver/stream_positions.py) in the transaction of each batch, so a claim and the
events it covers land together. Every process listens; a reader that sees the visible
position (the lowest live writer's claim) move reads the events in between in one query
and hands them to the same persist listeners a local commit calls (room heads, sync
caches, the notifier, pushers), so everything built on the single-process write-through
works unchanged. After a (re)connect a process catches up from `stream_positions`.
Attached as `hs.replication` only when `worker.role` is not `main`."""
from __future__ import annotations

import logging
import select
import threading
import time
from typing import TYPE_CHECKING, Awaitable, Callable

import orjson
import psycopg2
import psycopg2.extensions
from twisted.internet import defer, reactor

from homeserver.event_cache import event_from_stored
from homeserver.push.evaluation import RESULTS as PUSH_RESULTS
from homeserver.stream_positions import StreamView, WriterClaim, should_reannounce
from storage import events as events_store
from storage import replication as repl_store

if TYPE_CHECKING:
    from homeserver.event import Event
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)
EVENTS = "events"
STATE_GROUP_STRIDE = 64   # writers take state group ids in residue classes: at most 64 writers
DEAD_CHECK_SECONDS = 2.0  # a writer holding the others back this long: is it still there?


def application_name(instance: str) -> str:
    return f"hs:{instance}"


class Replication:
    def __init__(self, hs: "HomeServer") -> None:
        self.hs = hs
        cfg = hs.config.worker
        self.instance = cfg.instance_name
        self.writers = list(cfg.writers)
        self.is_writer = cfg.role == "writer"
        self.view = StreamView(self.writers)
        self.claim: WriterClaim | None = None
        self.replayed = 0                       # events handed to the listeners up to here
        self._invalidations: dict[str, list[Callable[[str], None]]] = {}
        self._positions: dict[str, list[Callable[[int], None]]] = {}  # other streams' readers
        self._reconnects: list[Callable[[], Awaitable[None]]] = []
        self._advancing = False
        self._dead_check = None
        self._waiters: list[tuple[int, defer.Deferred]] = []
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._announcing = False
        self._catching_up = False  # after a reconnect: hold replays until the hooks ran

    # ---- start and stop --------------------------------------------------------------

    async def start(self) -> None:
        db = self.hs.db
        if self.is_writer:
            await db.run(repl_store.sync_sequence)
            start = await db.run(repl_store.start_position, EVENTS)
            self.claim = WriterClaim(start)
            # Before any allocation: readers must know this writer before its first id.
            await db.run(repl_store.restart_claim, EVENTS, self.instance, start)
            persister = self.hs.persister
            index = self.writers.index(self.instance)
            top = await db.run(events_store.max_state_group)
            persister.set_state_group_allocation(top + 1, index, STATE_GROUP_STRIDE)
            persister.multi_writer = self
        for writer, position in (await db.run(repl_store.positions, EVENTS)).items():
            self.view.announce(writer, position)
        self.replayed = self.view.visible
        self.hs.persister.max_stream_ordering = self.replayed

    def listen(self) -> None:
        """Once every persist listener is in place: replicated events reach them all."""
        hs = self.hs
        # What one process changes and the others cache.
        self.on_invalidate("tokens", lambda k: hs.accounts.forget_tokens(
            [bytes.fromhex(h) for h in k.split(",")], replicate=False))
        self.on_invalidate("tenants", hs.tenancy.forget_user)
        self.on_invalidate("push_rules", hs.push.rules.invalidate)
        self.on_invalidate("room_blocks", hs.room_blocks.reload)
        from homeserver import room_directory  # noqa: PLC0415
        self.on_invalidate(room_directory.INVALIDATION, room_directory.PublishedReloader(hs).changed)
        from homeserver import admin_tasks  # noqa: PLC0415  (imports the room core)
        self.on_invalidate("room_deleted", lambda room_id: admin_tasks.forget_room(hs, room_id, replicate=False))
        self.on_invalidate("room_purged", lambda room_id: admin_tasks.forget_purged_events(hs, room_id))
        self._thread = threading.Thread(target=self._listen_loop, name="replication", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._dead_check is not None and self._dead_check.active():
            self._dead_check.cancel()

    # ---- writer side (called by the persister) ------------------------------------------

    async def allocate(self, n: int) -> list[int]:
        assert self.claim is not None
        self.claim.begin()
        return await self.hs.db.run(repl_store.allocate_stream_orderings, n)

    def pending_claim(self, highest: int) -> int:
        """The claim to announce in the batch's transaction if it commits."""
        assert self.claim is not None
        return max(self.claim.position, self.claim.heard, highest)

    def write_batch(self, cur, rows, now_ms: int, claim: int) -> None:
        # Refused when this writer was passed over for the rooms' layout (it lost its
        # sessions for a while): their new writer may be building them.
        self.hs.writer_layout.fence(cur, {r.room_id for r in rows})
        events_store.persist_batch(cur, rows, now_ms)
        repl_store.announce(cur, EVENTS, self.instance, claim)

    def finished(self, highest: int | None, announced: int | None) -> None:
        """The batch is over (committed with `announced` in it, or failed)."""
        assert self.claim is not None
        position = self.claim.finish(highest)
        if (announced is None or position > announced) and should_reannounce(self.instance, self.claim, self.view):
            self._announce()

    def _announce(self) -> None:
        if self._announcing:
            return
        self._announcing = True

        async def run() -> None:
            try:
                while self.claim is not None:
                    position = self.claim.position
                    await self.hs.db.run(repl_store.announce, EVENTS, self.instance, position)
                    if self.claim.position == position:
                        break
            except Exception:
                logger.warning("announcing the stream position failed", exc_info=True)
            finally:
                self._announcing = False
        defer.ensureDeferred(run())

    # ---- cache invalidations ---------------------------------------------------------

    def on_invalidate(self, cache: str, fn: Callable[[str], None]) -> None:
        self._invalidations.setdefault(cache, []).append(fn)

    def invalidate(self, cache: str, key: str) -> defer.Deferred:
        """Tell every other process to drop `key` from `cache`."""
        return self.hs.db.run(repl_store.notify, {"inv": cache, "k": key, "from": self.instance})

    def on_reconnect(self, fn: "Callable[[], Awaitable[None]]") -> None:
        """Run `fn` after every (re)connect, before the positions are read again: what
        the notices told may have been missed."""
        self._reconnects.append(fn)

    # ---- reading positions ----------------------------------------------------------

    def on_position(self, stream: str, fn: Callable[[int], None]) -> None:
        """Tell `fn` each position announced for `stream` (a stream other than the events,
        with one writer), and the stored one after every (re)connect."""
        self._positions.setdefault(stream, []).append(fn)

    def _tell_position(self, stream: str, position: int) -> None:
        for fn in self._positions.get(stream, ()):
            try:
                fn(position)
            except Exception:
                logger.exception("handling a position of %s failed", stream)

    async def catch_up_with_writers(self, timeout: float = 10.0) -> None:
        """Wait until this process has replayed every event allocated so far: after a
        write forwarded to a writer, so the client reads its own write from here."""
        await self.wait_until(await self.hs.db.run(repl_store.allocated_up_to), timeout)

    async def wait_until(self, position: int, timeout: float = 10.0) -> None:
        try:
            await self.wait_for(position, timeout)
        except defer.TimeoutError:
            logger.warning("replication did not reach %d within %.0f s", position, timeout)

    def wait_for(self, position: int, timeout: float = 10.0) -> defer.Deferred:
        """Fires once this process has replayed the events up to `position`."""
        if self.replayed >= position:
            return defer.succeed(True)
        self._waiters = [(p, w) for p, w in self._waiters if not w.called]  # (given up on: timed out)
        d: defer.Deferred = defer.Deferred()
        self._waiters.append((position, d))
        d.addTimeout(timeout, reactor)
        return d

    def _listen_loop(self) -> None:
        dsn = self.hs.db.dsn
        pause = 0.1
        while not self._stopping.is_set():
            conn = None
            try:
                conn = psycopg2.connect(dsn)
                conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
                conn.cursor().execute(f"LISTEN {repl_store.CHANNEL}")
                pause = 0.1
                # Listening first, then reading the tables: nothing falls in between.
                reactor.callFromThread(lambda: defer.ensureDeferred(self._catch_up()))
                while not self._stopping.is_set():
                    if select.select([conn], [], [], 1.0) == ([], [], []):
                        continue
                    conn.poll()
                    if conn.notifies:
                        payloads = [n.payload for n in conn.notifies]
                        conn.notifies.clear()
                        reactor.callFromThread(self._on_notifies, payloads)
            except Exception as e:
                if not self._stopping.is_set():
                    logger.warning("replication connection lost (%s); reconnecting", e)
                    time.sleep(pause)
                    pause = min(pause * 2, 2.0)
            finally:
                if conn is not None:
                    conn.close()

    async def _catch_up(self) -> None:
        # Notices heard meanwhile are applied, but nothing is replayed before the hooks
        # (the writers' layout: whose claims count) have read what was missed.
        self._catching_up = True
        try:
            for fn in self._reconnects:
                await fn()
        except Exception:
            logger.warning("catching up after a reconnect failed", exc_info=True)
        finally:
            self._catching_up = False
        try:
            for writer, position in (await self.hs.db.run(repl_store.positions, EVENTS)).items():
                self._heard(writer, position)
            for stream in list(self._positions):
                for position in (await self.hs.db.run(repl_store.positions, stream)).values():
                    self._tell_position(stream, position)
        except Exception:
            logger.warning("catching up stream positions failed", exc_info=True)
        self._advance()

    def _on_notifies(self, payloads: list[str]) -> None:
        for raw in payloads:
            try:
                note = orjson.loads(raw)
            except ValueError:
                continue
            if "s" in note:
                if note["s"] == EVENTS:
                    self._heard(note["w"], int(note["p"]))
                else:
                    self._tell_position(note["s"], int(note["p"]))
            elif "inv" in note and note.get("from") != self.instance:
                for fn in self._invalidations.get(note["inv"], ()):
                    try:
                        fn(note["k"])
                    except Exception:
                        logger.exception("invalidating %s failed", note["inv"])
        self._advance()

    def _heard(self, writer: str, position: int) -> None:
        self.view.announce(writer, position)
        if self.claim is not None:
            self.claim.hear(position)
            if should_reannounce(self.instance, self.claim, self.view):
                self._announce()

    def _advance(self) -> None:
        if self._catching_up:
            return  # _catch_up advances when it is done
        if not self._advancing and self.view.visible > self.replayed:
            self._advancing = True
            defer.ensureDeferred(self._replay())
        elif self.view.blocking() is not None and self._dead_check is None:
            self._dead_check = reactor.callLater(DEAD_CHECK_SECONDS, self._check_blocking)

    async def _replay(self) -> None:
        try:
            while self.view.visible > self.replayed and not self._catching_up:
                target = self.view.visible
                events: "list[Event]" = []
                if not self.is_writer:  # a writer's own listeners saw its own events
                    rows = await self.hs.db.run(repl_store.events_between, self.replayed, target)
                    pushed = await self.hs.db.run(repl_store.push_results_between, self.replayed, target)
                    if self.hs.config.worker.role == "sync":
                        # Long-polls are woken by the members the room heads list: know
                        # every room that has news (a load per room new to this process).
                        for room_id in {room for _, room, _ in rows}:
                            if self.hs.room_heads.peek(room_id) is None:
                                await self.hs.room_heads.get(room_id)
                    for stored, _, version in rows:
                        event = event_from_stored(stored, version)
                        if stored.stream_ordering in pushed:  # unread counts and pushers go on from here
                            event.internal[PUSH_RESULTS] = pushed[stored.stream_ordering]
                        events.append(event)
                # The position first, then the listeners, as after a local commit: a pusher
                # nudged by them reads up to it.
                self.replayed = target
                self.hs.persister.max_stream_ordering = target
                self._hand_over(events)
                self._wake_waiters()
        except Exception:
            logger.warning("reading replicated events failed; trying again in a second", exc_info=True)
            reactor.callLater(1.0, self._advance)
        finally:
            self._advancing = False
        if self.view.blocking() is not None and self._dead_check is None:
            self._dead_check = reactor.callLater(DEAD_CHECK_SECONDS, self._check_blocking)

    def _hand_over(self, events: "list[Event]") -> None:
        """Events another process wrote, to this process's heads, caches and listeners."""
        heads = self.hs.room_heads
        for ev in events:
            head = heads.peek(ev.room_id)
            if head is not None:
                if ev.is_state():
                    head.apply_state(ev)
                head.extremities = [ev.event_id]
                head.depth = ev.depth
                head.version += 1
            self.hs.event_cache.put(ev)
        if events:
            self.hs.persister.replay(events)

    def _wake_waiters(self) -> None:
        ready = [(p, d) for p, d in self._waiters if p <= self.replayed]
        self._waiters = [(p, d) for p, d in self._waiters if p > self.replayed]
        for _, d in ready:
            if not d.called:
                d.callback(True)

    def _check_blocking(self) -> None:
        self._dead_check = None
        writer = self.view.blocking()
        if writer is None:
            return

        async def check() -> None:
            try:
                sessions = await self.hs.db.run(repl_store.live_sessions, application_name(writer))
            except Exception:
                sessions = 1
            if sessions == 0 and self.view.blocking() == writer:
                logger.warning("writer %s has no database session left: not waiting for it", writer)
                self.view.mark_dead(writer)
            self._advance()
            if self.view.blocking() is not None and self._dead_check is None:
                self._dead_check = reactor.callLater(DEAD_CHECK_SECONDS, self._check_blocking)
        defer.ensureDeferred(check())
