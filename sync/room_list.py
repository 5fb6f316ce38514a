"""Each user's rooms in activity order, for sliding sync's windows, kept incrementally.

A room's place is its bump stamp: the stream position of its latest "bump" event (a
message, an encrypted event, a sticker, a call invite, a poll or live-location start, the
create event), or of the user's own membership change if that is later (joining puts a
room at the top; an invite, knock, leave or ban is placed where it happened, since the
user sees nothing after it). Reactions, edits, receipts and most state changes do not
move a room: clients sort by the same stamp, so the server's window matches the list
the user sees.

Bump positions per room live in memory, written through by the persist path (one dict
store per bump event); rooms not seen since start are read in one statement. Each
syncing user has a sorted list of (-stamp, room) built once (a sort of their rooms) and
then brought up to date on each request from the room change log (`room_log`): only the
rooms that got events since the list's position are re-placed (bisect out, bisect in).
A window of the list is a slice; nothing sorts every room per request."""
from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Iterator

from homeserver.event import Event
from homeserver.lru import LRU
from storage import sliding_sync as store

if TYPE_CHECKING:
    from homeserver.server import HomeServer
    from sync.engine import SyncEngine

BUMP_TYPES = frozenset({
    "m.room.create", "m.room.message", "m.room.encrypted", "m.sticker", "m.call.invite",
    "m.poll.start", "org.matrix.msc3381.poll.start", "m.beacon_info", "org.matrix.msc3672.beacon_info",
})
MAX_USERS = 5_000  # ordered lists kept (about 40 bytes a room); others are rebuilt on use


class _UserOrder:
    __slots__ = ("pos", "stamps", "entries", "self_left")

    def __init__(self, pos: int) -> None:
        self.pos = pos                       # events position the order reflects
        self.stamps: dict[str, int] = {}     # room -> stamp
        self.entries: list[tuple[int, str]] = []  # (-stamp, room), ascending: newest first
        self.self_left: set[str] = set()     # left rooms the user left themselves (not kicked)

    def place(self, room_id: str, stamp: int) -> None:
        old = self.stamps.get(room_id)
        if old == stamp:
            return
        entries = self.entries
        if old is not None:
            i = bisect.bisect_left(entries, (-old, room_id))
            del entries[i]
        self.stamps[room_id] = stamp
        bisect.insort(entries, (-stamp, room_id))


class RoomList:
    def __init__(self, hs: "HomeServer", engine: "SyncEngine") -> None:
        self.hs = hs
        self.engine = engine
        self._bump: dict[str, int] = {}
        self._bump_known: set[str] = set()   # rooms whose bump position is complete here
        self._users: LRU[str, _UserOrder] = LRU(MAX_USERS)

    # ---- written through ------------------------------------------------------------

    def on_events(self, events: list[Event]) -> None:
        bump = self._bump
        for ev in events:
            if ev.type in BUMP_TYPES and ev.stream_ordering:
                so = ev.stream_ordering
                if so > bump.get(ev.room_id, 0):
                    bump[ev.room_id] = so
                if ev.type == "m.room.create":
                    self._bump_known.add(ev.room_id)  # born here: every bump event seen

    def forget_room(self, room_id: str) -> None:
        self._bump.pop(room_id, None)
        self._bump_known.discard(room_id)

    # ---- reading --------------------------------------------------------------------

    def bump_stamp(self, room_id: str, membership: str, membership_stream: int) -> int:
        if membership == "join":
            return max(self._bump.get(room_id, 0), membership_stream)
        return membership_stream

    async def ensure_bumps(self, room_ids: list[str]) -> None:
        missing = [r for r in room_ids if r not in self._bump_known]
        if missing:
            found = await self.hs.db.run(store.bump_positions, missing, sorted(BUMP_TYPES))
            for room_id in missing:
                s = found.get(room_id, 0)
                if s > self._bump.get(room_id, 0):  # an event persisted meanwhile is newer
                    self._bump[room_id] = s
                self._bump_known.add(room_id)

    async def ordered(self, user_id: str, rooms: dict[str, tuple[str, int]]) -> "_UserOrder":
        """The user's rooms (`rooms`: UserRooms.rooms_of), newest stamp first."""
        now = self.hs.persister.max_stream_ordering
        order = self._users.get(user_id)
        changed: set[str] | None = None
        if order is not None and len(order.stamps) == len(rooms):
            if order.pos == now:
                return order  # nothing persisted since: the common idle case
            keys = self.engine.room_log.keys_after(order.pos, 4 * len(rooms) + 64)
            if keys is not None:
                changed = {r for r in keys if r in rooms}
        todo = list(rooms) if changed is None else list(changed)
        await self.ensure_bumps([r for r in todo if rooms[r][0] == "join"])
        self_left = await self._left_by_self(user_id, [r for r in todo if rooms[r][0] == "leave"])
        # Synchronous from here: no event can slip in between reading and placing.
        if changed is None:
            order = _UserOrder(now)
            order.stamps = {r: self.bump_stamp(r, m, s) for r, (m, s) in rooms.items()}
            order.entries = sorted((-stamp, r) for r, stamp in order.stamps.items())
            self._users.put(user_id, order)
        else:
            assert order is not None
            for room_id in changed:
                membership, m_stream = rooms[room_id]
                order.place(room_id, self.bump_stamp(room_id, membership, m_stream))
                order.self_left.discard(room_id)
            order.pos = now
        order.self_left.update(self_left)
        return order

    async def _left_by_self(self, user_id: str, room_ids: list[str]) -> set[str]:
        """Those of the user's left rooms whose leave the user sent (not a kick)."""
        out: set[str] = set()
        unknown = []
        for room_id in room_ids:
            head = self.hs.room_heads.peek(room_id)
            ev = head.state.get(("m.room.member", user_id)) if head is not None else None
            if ev is None:
                unknown.append(room_id)
            elif ev.sender == user_id:
                out.add(room_id)
        if unknown:
            senders = await self.hs.db.run(store.membership_senders, user_id, unknown)
            out.update(r for r, sender in senders.items() if sender == user_id)
        return out


def newest_first(order: _UserOrder) -> Iterator[str]:
    for _, room_id in order.entries:
        yield room_id
