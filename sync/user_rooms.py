"""In memory, written through: each syncing user's rooms with their membership and the
stream position where that membership began, and each room's latest stream position. An
idle incremental sync reads only these.

The position is that of the last *transition* (invite -> join, join -> leave...), not of
the last member event: a join -> join event (a display-name or avatar change) is an
ordinary state change, and must not make /sync treat the room as newly joined."""
from __future__ import annotations

from typing import TYPE_CHECKING

from homeserver.event import Event
from storage import state as state_store

if TYPE_CHECKING:
    from homeserver.server import HomeServer


def _load_user(cur, user_id: str):
    # For each current membership: the first member event of the latest run of that same
    # membership (after the last event with a different one).
    cur.execute(
        "SELECT c.room_id, c.membership, COALESCE("
        " (SELECT min(m.stream_ordering) FROM room_memberships m"
        "   WHERE m.user_id = c.state_key AND m.room_id = c.room_id AND m.stream_ordering > COALESCE("
        "     (SELECT max(o.stream_ordering) FROM room_memberships o WHERE o.user_id = c.state_key"
        "      AND o.room_id = c.room_id AND o.membership <> c.membership), 0)), e.stream_ordering)"
        " FROM current_state c JOIN events e USING (event_id)"
        " WHERE c.type = 'm.room.member' AND c.state_key = %s",
        (user_id,))
    rows = cur.fetchall()
    cur.execute("SELECT room_id FROM forgotten_rooms WHERE user_id = %s", (user_id,))
    forgotten = {r[0] for r in cur.fetchall()}
    return rows, forgotten


def _load_room_streams(cur, room_ids: list[str]) -> dict[str, int]:
    cur.execute("SELECT room_id, max(stream_ordering) FROM events WHERE room_id = ANY(%s)"
                " GROUP BY room_id", (room_ids,))
    return dict(cur.fetchall())


# Several processes: a room forgotten through one (its writer answers /forget) is left out
# of the /sync of another; keyed "user_id room_id".
FORGOTTEN_INVALIDATION = "room_forgotten"


class UserRooms:
    def __init__(self, hs: "HomeServer") -> None:
        self.hs = hs
        self._users: dict[str, dict[str, tuple[str, int]]] = {}  # user -> room -> (membership, stream)
        self._forgotten: dict[str, set[str]] = {}
        self.room_stream: dict[str, int] = {}
        if hs.replication is not None:
            hs.replication.on_invalidate(FORGOTTEN_INVALIDATION, lambda key: self.forget(*key.split(" ", 1)))

    async def rooms_of(self, user_id: str) -> dict[str, tuple[str, int]]:
        rooms = self._users.get(user_id)
        if rooms is None:
            # A membership committed while we read would be missed by the write-through
            # (the user is not cached yet): read until the stream stood still meanwhile.
            while True:
                before = self.hs.persister.max_stream_ordering
                rows, forgotten = await self.hs.db.run(_load_user, user_id)
                if self.hs.persister.max_stream_ordering == before or user_id in self._users:
                    break
            rooms = self._users.setdefault(user_id, {r: (m, s) for r, m, s in rows})
            self._forgotten[user_id] = forgotten
            missing = [r for r in rooms if r not in self.room_stream]
            if missing:
                for room_id, s in (await self.hs.db.run(_load_room_streams, missing)).items():
                    self.room_stream[room_id] = max(self.room_stream.get(room_id, 0), s)
        return rooms

    def forgotten(self, user_id: str) -> set[str]:
        return self._forgotten.get(user_id, set())

    def forget(self, user_id: str, room_id: str) -> None:
        self._forgotten.setdefault(user_id, set()).add(room_id)

    async def user_forgot(self, user_id: str, room_id: str) -> None:
        """The user forgot the room: stored, here and in the other processes (the sync
        process's /sync leaves it out)."""
        await self.hs.db.run(state_store.forget_room, user_id, room_id)
        self.forget(user_id, room_id)
        await self.hs.invalidate_elsewhere(FORGOTTEN_INVALIDATION, f"{user_id} {room_id}")

    def drop_room(self, room_id: str) -> None:
        """A deleted room disappears from every cached user's list."""
        self.room_stream.pop(room_id, None)
        for rooms in self._users.values():
            rooms.pop(room_id, None)
        for forgotten in self._forgotten.values():
            forgotten.discard(room_id)

    def on_events(self, events: list[Event]) -> None:
        for ev in events:
            room_id = ev.room_id
            self.room_stream[room_id] = max(self.room_stream.get(room_id, 0), ev.stream_ordering or 0)
            if ev.type == "m.room.member" and ev.membership and ev.state_key in self._users:
                rooms = self._users[ev.state_key]
                known = rooms.get(room_id)
                if known is None or known[0] != ev.membership:  # a transition, not a profile change
                    rooms[room_id] = (ev.membership, ev.stream_ordering or 0)
                if ev.membership in ("join", "invite", "knock"):
                    self._forgotten.get(ev.state_key, set()).discard(room_id)
