"""Unread notification counts per (user, room, thread), in memory, written through.

A user's counts are loaded in bulk (one statement) the first time they are asked for,
and from then on kept current by the persist path (each new notification adds one) and
by read receipts (a receipt that moves a read position recounts that one room from the
stored push actions). A /sync only reads memory. The stored push actions are the truth:
they are written in the event's own transaction, so nothing is lost in a crash.

Threads: 'main' is the main timeline, any other key a thread root's event id. An
unthreaded receipt reads everything in the room up to its event; a threaded one (or
'main') only its thread."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet import defer

from homeserver.async_utils import Coalescer, KeyedLock
from storage import push as push_store

if TYPE_CHECKING:
    from homeserver.server import HomeServer

MAIN = "main"
# Several processes: the stream owner tells the others of each read receipt it applied
# (key: user room thread event_stream receipt_stream), so the counts they hold (the
# pushers job's badges, /notifications) come down too.
RECEIPT_INVALIDATION = "read_receipt"
logger = logging.getLogger(__name__)


class RoomUnread:
    __slots__ = ("read_all", "read_threads", "threads", "receipt_change")

    def __init__(self) -> None:
        self.read_all = 0                        # stream position of the unthreaded receipt
        self.read_threads: dict[str, int] = {}   # thread -> position of its threaded receipt
        self.threads: dict[str, list[int]] = {}  # thread -> [notifications, highlights]
        self.receipt_change = 0                  # receipt stream id of the last reset

    def read_position(self, thread_id: str) -> int:
        """How far the thread is read (an unthreaded receipt reads every thread)."""
        return max(self.read_all, self.read_threads.get(thread_id, 0))

    def totals(self) -> tuple[int, int]:
        n = h = 0
        for counts in self.threads.values():
            n += counts[0]
            h += counts[1]
        return n, h


class _Loading:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, bool, int]] = []  # (room, thread, highlight, stream)
        self.dirty = False


class UnreadCounts:
    def __init__(self, hs: "HomeServer") -> None:
        self.hs = hs
        self._users: dict[str, dict[str, RoomUnread]] = {}
        self._loading: dict[str, _Loading] = {}
        self._load = Coalescer()
        self._recount_lock = KeyedLock()
        self._recounting: dict[tuple[str, str], list[tuple[str, bool, int]]] = {}
        # Told (user_id) when a receipt lowered a user's counts: badge-only pushes.
        self.on_counts_lowered: list[Callable[[str], None]] = []
        if hs.replication is not None:
            hs.replication.on_invalidate(RECEIPT_INVALIDATION, self._receipt_elsewhere)

    # ---- loading -------------------------------------------------------------------

    def is_loaded(self, user_id: str) -> bool:
        return user_id in self._users

    async def ensure_loaded(self, user_id: str) -> dict[str, RoomUnread]:
        rooms = self._users.get(user_id)
        if rooms is not None:
            return rooms
        return await self._load.run(user_id, lambda: self._load_user(user_id))

    async def _load_user(self, user_id: str) -> dict[str, RoomUnread]:
        while True:
            loading = self._loading[user_id] = _Loading()
            try:
                snap = await self.hs.db.run(push_store.load_unread, user_id)
            finally:
                del self._loading[user_id]
            if not loading.dirty:  # a receipt landed meanwhile: its effect may be missing
                break
        rooms: dict[str, RoomUnread] = {}
        for room_id, thread_id, pos in snap.positions:
            ru = rooms.setdefault(room_id, RoomUnread())
            if thread_id == "":
                ru.read_all = pos
            else:
                ru.read_threads[thread_id] = pos
        for room_id, thread_id, n, h in snap.counts:
            rooms.setdefault(room_id, RoomUnread()).threads[thread_id] = [n, h]
        for room_id, thread_id, highlight, stream in loading.events:
            if stream > snap.upto:  # committed after the snapshot was taken
                _add(rooms, room_id, thread_id, highlight)
        self._users[user_id] = rooms
        return rooms

    # ---- written through -------------------------------------------------------------

    def add(self, room_id: str, stream: int, results: list[tuple[str, str, bool, Any]]) -> None:
        """New notifications of one committed event: [(user, thread, highlight, actions)]."""
        users, loading, recounting = self._users, self._loading, self._recounting
        for user_id, thread_id, highlight, _ in results:
            rooms = users.get(user_id)
            if rooms is not None:
                ru = rooms.get(room_id)
                if ru is not None and stream <= ru.read_position(thread_id):
                    continue  # read already: a receipt heard from the stream owner before this replay
                pending = recounting.get((user_id, room_id)) if recounting else None
                if pending is not None:
                    pending.append((thread_id, highlight, stream))
                _add(rooms, room_id, thread_id, highlight)
            elif user_id in loading:
                loading[user_id].events.append((room_id, thread_id, highlight, stream))

    def joined(self, user_id: str, room_id: str, stream: int) -> None:
        """The user (re)joined: what came before, an invite included, no longer counts."""
        rooms = self._users.get(user_id)
        if rooms is None:
            if user_id in self._loading:
                self._loading[user_id].dirty = True
            return
        ru = rooms.setdefault(room_id, RoomUnread())
        ru.read_all = max(ru.read_all, stream)
        ru.threads = {}

    async def on_receipt(self, user_id: str, room_id: str, thread_id: str | None,
                         event_stream: int, receipt_stream: int) -> bool:
        """A read receipt (m.read or m.read.private) of `user_id` at the event at
        `event_stream`. Returns True when the user's counts in the room went down."""
        if user_id in self._loading:
            self._loading[user_id].dirty = True
            return False
        if user_id not in self._users:
            return False  # loaded from the database, receipts included, when first needed
        return await self._recount_lock.run((user_id, room_id), lambda: self._apply_receipt(
            user_id, room_id, thread_id, event_stream, receipt_stream))

    def announce_receipt(self, user_id: str, room_id: str, thread_id: str | None,
                         event_stream: int, receipt_stream: int) -> None:
        """The stream owner stored and applied a read receipt: the other processes apply
        it to the counts they hold. Not waited for: the receipt is stored and served
        already, and a notice lost with a failed NOTIFY only leaves a badge high."""
        self.hs.invalidate_elsewhere(
            RECEIPT_INVALIDATION, f"{user_id} {room_id} {thread_id or ''} {event_stream} {receipt_stream}",
        ).addErrback(lambda f: logger.warning("announcing a read receipt of %s failed: %s",
                                              user_id, f.getErrorMessage()))

    def _receipt_elsewhere(self, key: str) -> None:
        user_id, room_id, thread_id, event_stream, receipt_stream = key.split(" ")
        defer.ensureDeferred(self.on_receipt(user_id, room_id, thread_id or None, int(event_stream),
                                             int(receipt_stream))).addErrback(
            lambda f: logger.warning("applying a read receipt of %s heard from another process failed: %s",
                                     user_id, f.getErrorMessage()))

    async def _apply_receipt(self, user_id: str, room_id: str, thread_id: str | None,
                             event_stream: int, receipt_stream: int) -> bool:
        rooms = self._users.get(user_id)
        if rooms is None:
            return False
        ru = rooms.setdefault(room_id, RoomUnread())
        if thread_id is None:
            if event_stream <= ru.read_all:
                return False
            ru.read_all = event_stream
        else:
            if event_stream <= max(ru.read_threads.get(thread_id, 0), ru.read_all):
                return False  # already read that far
            ru.read_threads[thread_id] = event_stream
        before = ru.totals()
        key = (user_id, room_id)
        pending: list[tuple[str, bool, int]] = []
        self._recounting[key] = pending
        try:
            rows, upto = await self.hs.db.run(push_store.count_unread_in_room, user_id, room_id,
                                              ru.read_all, dict(ru.read_threads))
        finally:
            del self._recounting[key]
        ru.threads = {t: [n, h] for t, n, h in rows}
        for thread, highlight, stream in pending:
            if stream > upto:
                counts = ru.threads.setdefault(thread, [0, 0])
                counts[0] += 1
                counts[1] += highlight
        ru.receipt_change = receipt_stream
        lowered = ru.totals() != before
        if lowered:
            for fn in self.on_counts_lowered:
                fn(user_id)
        return lowered

    # ---- reading (memory only) -------------------------------------------------------

    def room(self, user_id: str, room_id: str) -> RoomUnread | None:
        rooms = self._users.get(user_id)
        return rooms.get(room_id) if rooms is not None else None

    def for_sync(self, user_id: str, room_id: str, by_thread: bool) -> tuple[dict, dict | None]:
        """(unread_notifications, unread_thread_notifications or None). Without `by_thread`
        the room's counts include its threads; with it, the main timeline's and each
        thread's apart."""
        ru = self.room(user_id, room_id)
        if ru is None:
            return {"notification_count": 0, "highlight_count": 0}, ({} if by_thread else None)
        if not by_thread:
            n, h = ru.totals()
            return {"notification_count": n, "highlight_count": h}, None
        main = ru.threads.get(MAIN, (0, 0))
        threads = {t: {"notification_count": c[0], "highlight_count": c[1]}
                   for t, c in ru.threads.items() if t != MAIN and c[0]}
        return {"notification_count": main[0], "highlight_count": main[1]}, threads

    def reset_since(self, user_id: str, room_id: str, receipt_stream: int) -> bool:
        """Whether a receipt changed the user's counts in the room after `receipt_stream`."""
        ru = self.room(user_id, room_id)
        return ru is not None and ru.receipt_change > receipt_stream

    def badge(self, user_id: str) -> int:
        """The number of rooms with unread notifications (what phones show on the icon)."""
        rooms = self._users.get(user_id) or {}
        return sum(1 for ru in rooms.values() if any(c[0] for c in ru.threads.values()))

    def total(self, user_id: str) -> int:
        """The number of unread notifications in all rooms."""
        rooms = self._users.get(user_id) or {}
        return sum(ru.totals()[0] for ru in rooms.values())

    def read_position(self, user_id: str, room_id: str, thread_id: str) -> int:
        ru = self.room(user_id, room_id)
        return 0 if ru is None else ru.read_position(thread_id)


def _add(rooms: dict[str, RoomUnread], room_id: str, thread_id: str, highlight: bool) -> None:
    ru = rooms.get(room_id)
    if ru is None:
        ru = rooms[room_id] = RoomUnread()
    counts = ru.threads.get(thread_id)
    if counts is None:
        ru.threads[thread_id] = [1, 1 if highlight else 0]
    else:
        counts[0] += 1
        if highlight:
            counts[1] += 1
