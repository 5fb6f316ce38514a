"""A bounded in-memory cache of each room's most recent events, written through by the
persist path. A room's cache is complete for stream positions after `complete_after`, so
an incremental sync whose range starts there is served without Postgres."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable

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
            if ev.redacts:
                self.mark_redacted(ev.room_id, ev.redacts, ev.event_id)
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

    def tail(self, room_id: str, after: int, upto: int, limit: int,
             keep: Callable[[Event], bool] | None) -> tuple[list[Event], bool] | None:
        """The newest `limit` kept events with after < stream <= upto, oldest first, and
        whether more kept events precede them; None if the cache cannot tell."""
        tl = self._rooms.get(room_id)
        if tl is None:
            return None
        out: list[Event] = []
        for e in reversed(tl.events):  # newest first: stop as soon as we have enough
            so = e.stream_ordering or 0
            if so <= after:
                return out[::-1], False
            if so <= upto and (keep is None or keep(e)):
                if len(out) == limit:
                    return out[::-1], True  # a full page and one more: the answer is known
                out.append(e)
        # Ran out of cached events: only a complete cache knows nothing precedes them.
        return (out[::-1], False) if after >= tl.complete_after else None

    def mark_redacted(self, room_id: str, target_id: str, redaction_id: str) -> None:
        tl = self._rooms.get(room_id)
        for e in tl.events if tl else ():
            if e.event_id == target_id:
                e.mark_redacted(redaction_id)

    def forget_room(self, room_id: str) -> None:
        """History changed under the cache (purged, pruned, deleted): read it from
        PostgreSQL again; the room's next event starts a fresh cache."""
        self._rooms.pop(room_id, None)
