"""Which writer builds a room, and moving rooms between writers while they run
(docs/scaling.md, "Growing from one process to many").

The writers sharing the rooms are a *layout* stored by generation (`writer_layouts`); a
room belongs to the writer its id hashes to (homeserver/sharding.py). A new generation,
written by `homeserver writers set`, moves the rooms whose hash now lands elsewhere. A room
must never have two builders, so a move is a hand-over:

- every process routes a room's writes to its owner under the newest generation at once;
- a writer of the previous generation stops starting writes to the rooms it gives up
  (they are handed to the new owner), lets those already started finish, waits until all
  it built for them is written, forgets what it held of them, and records its *release*;
- the new owner holds the writes of a room it gains until the room's previous owner has
  released (or has no database session left: PostgreSQL aborted whatever it had in flight),
  then loads the room from the tables.

Rooms whose owner does not change never stop. Generation and release notices travel as
invalidations (`writer_layout`) in commit order with the writers' stream claims, so a
process knows a new writer before the writer can allocate its first stream id.
"""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, AsyncIterator

from twisted.internet import defer, reactor, task

from homeserver.async_utils import Rerun
from homeserver.errors import MatrixError
from homeserver.sharding import writer_for_room
from storage import replication as repl_store
from storage import writer_layout as store

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)
LAYOUT_HEADER = b"X-Homeserver-Layout"
WAIT_SECONDS = 10.0        # a write held for a gained room gives up after this (503, retry)
DEAD_CHECK_SECONDS = 1.0   # while holding writes: is the previous owner still there?
LAGGING_WRITER_PAUSE = 0.05
SYNC_INSTANCES_TTL_S = 30.0


@dataclass(frozen=True)
class Layout:
    """One generation of the layout, with the previous one while rooms may still move."""
    generation: int
    writers: tuple[str, ...]
    previous: tuple[str, ...] | None = None
    released: frozenset[str] = field(default_factory=frozenset)

    def owner(self, room_id: str) -> str:
        return writer_for_room(room_id, list(self.writers))

    def previous_owner(self, room_id: str) -> str | None:
        return writer_for_room(room_id, list(self.previous)) if self.previous else None

    def handed_over(self, room_id: str) -> bool:
        """Whether the room's owner may build it: nobody else can any more (its previous
        owner is the same writer, or has released it, or was passed over)."""
        before = self.previous_owner(room_id)
        return before is None or before == self.owner(room_id) or before in self.released

    def may_build(self, room_id: str, me: str) -> bool:
        """Whether `me` may build the room's events now: its owner once handed over, or its
        previous owner until it has released (the writes it had started)."""
        if self.owner(room_id) == me:
            return self.handed_over(room_id)
        return self.previous_owner(room_id) == me and me not in self.released

    @property
    def moving(self) -> bool:
        return self.previous is not None and not set(self.previous) <= self.released


def parse_notice(key: str) -> tuple[int, str, str]:
    """A `writer_layout` invalidation: ("<generation> <w1,w2>") or ("<generation> released <w>")."""
    generation, _, rest = key.partition(" ")
    if rest.startswith("released "):
        return int(generation), "released", rest[len("released "):]
    return int(generation), "writers", rest


class RoomMoved(MatrixError):
    """The room's writes belong to another writer now: nothing was built, try there."""

    quiet = True  # an expected refusal (the persister logs it without a trace)

    def __init__(self, generation: int, message: str = "the room is moving to another writer; retry") -> None:
        super().__init__(503, "M_UNKNOWN", message)
        self.headers = {b"Retry-After": b"1", LAYOUT_HEADER: str(generation).encode()}
        self.generation = generation


class WriterLayout:
    """The layout as this process knows it; attached as `hs.writer_layout` with several
    processes (with one, `main` owns every room)."""

    def __init__(self, hs: "HomeServer") -> None:
        self.hs = hs
        cfg = hs.config.worker
        self.me = cfg.instance_name
        self.is_writer = cfg.role == "writer"
        self.layout = Layout(0, tuple(cfg.writers))
        self._config_urls = dict(cfg.instances)
        self._urls = dict(cfg.instances)
        self._building: dict[str, int] = {}    # writes in progress, by room
        self._changed: list[defer.Deferred] = []
        self._released: int = 0                # the generation this writer released
        self._announced: dict[int, tuple[str, ...]] = {}  # writers of generations not applied yet
        self._reloader = Rerun(self._reload_or_retry)
        self._sync_instances: list[str] = []
        self._sync_instances_at = float("-inf")

    # ---- start-up and notices ----------------------------------------------------------

    async def start(self) -> None:
        from homeserver.replication import STATE_GROUP_STRIDE  # noqa: PLC0415  (imports the room core)
        cfg = self.hs.config.worker
        slot = cfg.writers.index(self.me) if self.is_writer else None
        if slot is not None and slot >= STATE_GROUP_STRIDE:
            raise SystemExit(f"worker.writers puts {self.me} at position {slot}: at most {STATE_GROUP_STRIDE} writers")
        clash = await self.hs.db.run(store.register_instance, self.me, cfg.role, cfg.instances[self.me], slot)
        if clash is not None:
            raise SystemExit(f"worker.writers puts {self.me} at position {slot}, which writer {clash} holds: "
                             "list the writers in the same order everywhere and add new ones at the end")
        await self.hs.db.run(store.seed, list(cfg.writers))
        await self.reload()
        if self.hs.replication is not None:
            self.hs.replication.on_invalidate(store.INVALIDATION, self._heard)
            self.hs.replication.on_reconnect(self.reload)

    async def reload(self) -> None:
        """Read the layout from the tables (start-up, a notice, a reconnect)."""
        found = await self.hs.db.run(store.latest)
        generation, writers = found[0]
        previous = found[1][1] if len(found) > 1 else None
        released = await self.hs.db.run(store.releases, generation) if previous else set()
        await self._refresh_urls()
        self._apply(Layout(generation, tuple(writers), tuple(previous) if previous else None, frozenset(released)))

    async def _refresh_urls(self) -> None:
        """The config names the instances it knows; the others (writers or sync processes
        added later, or moved) as they registered."""
        self._urls = {**await self.hs.db.run(store.instance_urls), **self._config_urls}

    def _heard(self, key: str) -> None:
        generation, kind, value = parse_notice(key)
        lay = self.layout
        if kind == "writers" and generation > lay.generation:
            # Counted at once, before the notices after it: the claims of a new writer.
            self._announced[generation] = tuple(w for w in value.split(",") if w)
            if self.hs.replication is not None:
                self.hs.replication.view.set_writers(self.members())
            if generation == lay.generation + 1 and all(w in self._urls for w in self._announced[generation]):
                self._apply(Layout(generation, self._announced[generation], lay.writers, frozenset()))
                return
        elif kind == "released" and generation == lay.generation:
            self._apply(Layout(lay.generation, lay.writers, lay.previous, lay.released | {value}))
            return
        self._reload_soon()

    def _reload_soon(self) -> None:
        self._reloader.request()  # runs again if asked while running: no notice is lost

    async def _reload_or_retry(self) -> None:
        try:
            await self.reload()
        except Exception:
            logger.warning("reading the writers' layout failed; trying again", exc_info=True)
            reactor.callLater(1.0, self._reload_soon)

    def _apply(self, new: Layout) -> None:
        old = self.layout
        if (new.generation, len(new.released)) <= (old.generation, len(old.released)) and old.generation:
            return
        self.layout = new
        for generation in [g for g in self._announced if g <= new.generation]:
            del self._announced[generation]
        replication = self.hs.replication
        if replication is not None:
            replication.view.set_writers(self.members())
        if new.generation != old.generation and old.generation:
            logger.info("%s: writers' layout %d: %s (was %s)", self.me, new.generation, ", ".join(new.writers),
                        ", ".join(old.writers))
        if self.is_writer:
            released_now = new.released - (old.released if new.generation == old.generation else frozenset())
            # What this writer held of rooms it gains is older than what their previous
            # writer wrote since: read them again from the tables.
            self._forget_rooms(lambda room: new.owner(room) == self.me and new.previous_owner(room) in released_now
                               and new.previous_owner(room) != self.me)
            if new.previous and self.me in new.previous and self.me not in new.released \
                    and self._released != new.generation:
                self._released = new.generation
                defer.ensureDeferred(self._release(new.generation))
        self._tell_changed()

    def members(self) -> set[str]:
        """The writers whose stream claims count: those of the layout, those of the one
        before until they have released (they may still be writing), and this one."""
        lay = self.layout
        members = set(lay.writers) | (set(lay.previous or ()) - lay.released)
        for writers in self._announced.values():  # heard of, not applied yet
            members |= set(writers)
        return members | {self.me} if self.is_writer else members

    # ---- routing -------------------------------------------------------------------------

    def owner(self, room_id: str) -> str:
        return self.layout.owner(room_id)

    def url(self, instance: str) -> str:
        return self._urls[instance]

    async def sync_instances(self) -> list[str]:
        """The processes of role sync that are running, as registered (read again every 30 s)."""
        now = reactor.seconds()
        if now - self._sync_instances_at > SYNC_INSTANCES_TTL_S:
            self._sync_instances = await self.hs.db.run(store.live_instances_with_role, "sync")
            await self._refresh_urls()
            self._sync_instances_at = now
        return self._sync_instances

    def creators(self) -> tuple[str, ...]:
        """The writers new rooms are sent to: during a move, those that were writers
        before (a new writer has no room handed over yet to pick an id among)."""
        lay = self.layout
        if lay.moving:
            return tuple(w for w in lay.writers if w in (lay.previous or ())) or lay.writers
        return lay.writers

    # ---- building on a writer ------------------------------------------------------------

    def owns(self, room_id: str) -> bool:
        return self.layout.owner(room_id) == self.me

    def may_build(self, room_id: str) -> bool:
        return self.layout.may_build(room_id, self.me)

    def may_create(self, room_id: str) -> bool:
        """Whether a new room may take this id: this writer owns it and no other writer may
        still build under it (one that has not heard of the move yet would take a write
        for it as its own)."""
        lay = self.layout
        return lay.owner(room_id) == self.me and lay.handed_over(room_id)

    @asynccontextmanager
    async def building(self, room_id: str) -> AsyncIterator[None]:
        """Around a write to a room this writer owns: held until the room is handed over;
        RoomMoved when it belongs to another writer (nothing built)."""
        deadline = reactor.seconds() + WAIT_SECONDS
        next_check = 0.0
        while True:
            lay = self.layout
            if lay.owner(room_id) != self.me:
                raise RoomMoved(lay.generation)
            if lay.handed_over(room_id):
                break
            now = reactor.seconds()
            if now >= deadline:  # not RoomMoved: nobody else may build it either; the client retries
                error = MatrixError(503, "M_UNKNOWN", "the room is moving between writers; retry")
                error.headers = {b"Retry-After": b"2"}
                raise error
            if now >= next_check:  # at most once a second: is the previous writer still there?
                next_check = now + DEAD_CHECK_SECONDS
                await self._check_gone(lay.previous_owner(room_id) or "", lay.generation)
                self._reload_soon()  # in case a notice was missed
                continue
            try:
                await self._next_change(min(DEAD_CHECK_SECONDS, deadline - now))
            except defer.TimeoutError:
                pass
        self._building[room_id] = self._building.get(room_id, 0) + 1
        try:
            yield
        finally:
            left = self._building[room_id] - 1
            if left:
                self._building[room_id] = left
            else:
                del self._building[room_id]
            self._tell_changed()

    async def _check_gone(self, writer: str, generation: int) -> None:
        """A previous writer without a database session is passed over: its release is
        recorded on its behalf, under the lock its own batches check it with (a writer
        that was only cut off, and reconnects, finds it and writes none of those rooms:
        `fence`)."""
        lay = self.layout
        if not writer or writer in lay.released or lay.generation != generation:
            return
        from homeserver.replication import application_name  # noqa: PLC0415  (imports the room core)
        try:
            if await self.hs.db.run(repl_store.live_sessions, application_name(writer)):
                return
            await self.hs.db.run(store.pass_over, generation, writer)
        except Exception:
            logger.warning("passing over writer %s failed", writer, exc_info=True)
            return
        logger.warning("%s: writer %s has no database session left: its rooms are built by the new writers",
                       self.me, writer)
        # Applied here before building on it: the notice comes later.
        self._apply(Layout(lay.generation, lay.writers, lay.previous, lay.released | {writer}))

    def fence(self, cur, room_ids: "set[str]") -> None:
        """Inside a batch's transaction on this writer: refuse it when this writer was
        passed over (or released) for a layout under which the batch's rooms are not its
        own, or for one it has not heard of yet."""
        generation = store.released_since(cur, self.me, self.layout.generation)
        if generation is None:
            return
        lay = self.layout
        if generation > lay.generation or any(lay.owner(room) != self.me for room in room_ids):
            reactor.callFromThread(self._reload_soon)  # (on a database thread here)
            raise RoomMoved(max(generation, lay.generation))

    async def _release(self, generation: int) -> None:
        """Give up the rooms this writer no longer owns: the writes started finish and are
        written, then the release is recorded."""
        try:
            while True:
                lay = self.layout
                if lay.generation != generation:
                    return
                if not any(lay.owner(room) != self.me for room in self._building):
                    break
                await self._next_change(None)
            await self.hs.persister.settled_where(lambda room: self.layout.owner(room) != self.me)
            self._forget_rooms(lambda room: self.layout.owner(room) != self.me)
            await self.hs.db.run(store.release, generation, self.me)
            logger.info("%s: released the rooms moving to other writers (layout %d)", self.me, generation)
        except Exception:
            logger.exception("releasing rooms for layout %d failed; trying again", generation)
            self._released = 0
            reactor.callLater(1.0, lambda: self._apply_again(generation))

    def _apply_again(self, generation: int) -> None:
        if self.layout.generation == generation and self._released != generation:
            self._released = generation
            defer.ensureDeferred(self._release(generation))

    def _forget_rooms(self, which) -> None:
        """Drop what this writer holds of rooms another writer builds (or built): their
        heads (and loads in flight) and events are read from the tables when next needed.
        Rooms with writes in progress or events queued here are this writer's and kept."""
        queued = self.hs.persister.pending_rooms()
        rooms = {h.room_id for h in self.hs.room_heads.all()} | self.hs.room_heads.loading() \
            | self.hs.event_cache.rooms()
        for room_id in rooms:
            if which(room_id) and room_id not in self._building and room_id not in queued:
                self.hs.room_heads.invalidate(room_id)
                self.hs.event_cache.forget_room(room_id)

    # ---- waiting -------------------------------------------------------------------------

    def _next_change(self, timeout: float | None) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self._changed.append(d)
        if timeout is not None:
            d.addTimeout(timeout, reactor)
        return d

    def _tell_changed(self) -> None:
        waiting, self._changed = self._changed, []
        for d in waiting:
            if not d.called:
                d.callback(None)

    async def after_moved(self, generation: int) -> None:
        """A writer answered that a room is not its own, by its layout `generation`: wait
        until this process knows that generation; when it already does, the writer is the
        one behind (it has not heard the notice yet): give it a moment."""
        if self.layout.generation >= generation:
            await task.deferLater(reactor, LAGGING_WRITER_PAUSE, lambda: None)
        else:
            await self.until_generation(generation)

    async def until_generation(self, generation: int, timeout: float = 5.0) -> None:
        """Wait until this process knows `generation` (a writer said the room moved)."""
        waited = 0.0
        while self.layout.generation < generation and waited < timeout:
            try:
                await self._next_change(0.5)
            except defer.TimeoutError:
                await self.reload()  # the notice may have been missed in a reconnect
            waited += 0.5
