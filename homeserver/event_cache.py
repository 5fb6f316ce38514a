"""Events by id: a bounded in-memory cache in front of the events table."""
from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Collection

from homeserver.event import Event
from homeserver.room_versions import KNOWN_ROOM_VERSIONS
from storage import events as events_store

if TYPE_CHECKING:
    from storage.database import Database


def event_from_stored(stored: events_store.StoredEvent, room_version: str,
                      pdu: dict | None = None) -> Event:
    ev = Event(stored.event_id, KNOWN_ROOM_VERSIONS[room_version],
               pdu if pdu is not None else stored.pdu, stream_ordering=stored.stream_ordering)
    ev.internal.update(redacted_by=stored.redacted_by, unsigned=stored.unsigned,
                       txn_device=stored.txn_device, txn_id=stored.txn_id)
    return ev


class EventCache:
    def __init__(self, db: "Database", room_versions, capacity: int = 50_000) -> None:
        self._db = db
        self._room_versions = room_versions  # callable: room_id -> Deferred[str | None]
        self._cache: OrderedDict[str, Event] = OrderedDict()
        self._capacity = capacity

    def put(self, event: Event) -> None:
        self._cache[event.event_id] = event
        self._cache.move_to_end(event.event_id)
        while len(self._cache) > self._capacity:
            self._cache.popitem(last=False)

    def peek(self, event_id: str) -> Event | None:
        return self._cache.get(event_id)

    async def get_many(self, event_ids: list[str]) -> dict[str, Event]:
        found: dict[str, Event] = {}
        missing = []
        for eid in event_ids:
            ev = self._cache.get(eid)
            if ev is None:
                missing.append(eid)
            else:
                self._cache.move_to_end(eid)  # least recently used goes first
                found[eid] = ev
        if missing:
            stored = await self._db.run(events_store.get_events, missing)
            for eid, st in stored.items():
                pdu = st.pdu
                room_id = pdu.get("room_id") or "!" + eid[1:]
                version = await self._room_versions(room_id)
                ev = event_from_stored(st, version or "10", pdu)
                self.put(ev)
                found[eid] = ev
        return found

    async def get(self, event_id: str) -> Event | None:
        return (await self.get_many([event_id])).get(event_id)

    def from_stored_list(self, stored: list[events_store.StoredEvent], room_version: str) -> list[Event]:
        """Wrap rows already read (pagination), preferring the cached objects."""
        out = []
        for st in stored:
            ev = self._cache.get(st.event_id)
            if ev is None:
                ev = event_from_stored(st, room_version)
                self.put(ev)
            out.append(ev)
        return out

    def mark_redacted(self, room_id: str, target_id: str, redaction_id: str) -> None:
        ev = self._cache.get(target_id)
        if ev is not None and ev.room_id == room_id:
            ev.mark_redacted(redaction_id)

    def forget(self, event_ids: list[str]) -> None:
        for eid in event_ids:
            self._cache.pop(eid, None)

    def rooms(self) -> set[str]:
        """The rooms with events in the cache."""
        return {ev.room_id for ev in self._cache.values()}

    def forget_room(self, room_id: str, keep: Collection[str] = ()) -> None:
        """Drop every cached event of a room (a deleted room) but `keep`: one pass over the cache."""
        for eid in [eid for eid, ev in self._cache.items() if ev.room_id == room_id and eid not in keep]:
            del self._cache[eid]
