"""A bounded in-memory cache of each room's most recent events, written through by the
persist path. A room's cache is complete for stream positions after `complete_after`, so
an incremental sync whose range starts there is served without Postgres."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from homeserver.event import Event

PER_ROOM = 100


@dataclass
class _RoomTimeline:
    complete_after: int
    events: deque = field(default_factory=lambda: deque(maxlen=PER_ROOM))


class TimelineCache:
    def __init__(self) -> None:
        self._rooms: dict[str, _RoomTimeline] = {}

    def on_events(self, events: list[Event]) -> None:
        for ev in events:
            so = ev.stream_ordering or 0
            tl = self._rooms.get(ev.room_id)
            if tl is None:
                # Every later event of the room is appended here, so from now on the
                # cache holds everything after the one before this (and, for a room
                # born in this process, everything).
                start = 0 if ev.type == "m.room.create" else so - 1
                tl = self._rooms[ev.room_id] = _RoomTimeline(complete_after=start)
            if len(tl.events) == PER_ROOM:
                tl.complete_after = tl.events[0].stream_ordering
            tl.events.append(ev)

    def range(self, room_id: str, after: int, upto: int) -> list[Event] | None:
        """Events with after < stream <= upto, oldest first; None if not all are cached."""
        tl = self._rooms.get(room_id)
        if tl is None or after < tl.complete_after:
            return None
        return [e for e in tl.events if after < (e.stream_ordering or 0) <= upto]
