"""What this server answers about room events: PDUs in their federation form, the state
before an event with its auth chain, and walks back through the DAG (backfill, missing
events). Callers check the asking server's right to see each event (exposure)."""
from __future__ import annotations

import heapq
from typing import TYPE_CHECKING, Any

from homeserver.errors import not_found
from homeserver.event import Event
from homeserver.redaction import prune_event_dict
from homeserver.room_heads import RoomHead
from storage import federation as store

if TYPE_CHECKING:
    from homeserver.server import HomeServer


class Serving:
    def __init__(self, hs: "HomeServer", federation) -> None:
        self.hs = hs
        self.federation = federation

    def pdu(self, event: Event) -> dict[str, Any]:
        """As signed (redacted events in their redacted form)."""
        if event.internal.get("redacted_by"):
            return prune_event_dict(event.pdu, event.room_version)
        return event.pdu

    async def _events(self, head: RoomHead, ids) -> dict[str, Event]:
        return await self.federation.inbound.state.events(ids, head.room_version)

    async def state_before(self, head: RoomHead, event_id: str) -> list[Event]:
        """The room state before the event: its state group (the state after it) with
        its own key put back as it was (`replaces_state`)."""
        status = (await self.federation.inbound.statuses([event_id])).get(event_id)
        if status is None or status[0] == "rejected":
            raise not_found("event not found")
        state, _ = await self.federation.inbound.state.group(status[1])
        state = dict(state)
        event = (await self._events(head, [event_id]))[event_id]
        if event.is_state() and state.get(event.key) == event_id:
            previous = (event.internal.get("unsigned") or {}).get("replaces_state")
            if previous:
                state[event.key] = previous
            else:
                del state[event.key]
        loaded = await self._events(head, state.values())
        return [loaded[e] for e in state.values() if e in loaded]

    async def state_at(self, head: RoomHead, event_id: str, origin: str) -> tuple[list[Event], list[Event]]:
        if not await self.federation.exposure.may_see_event(origin, head, event_id):
            raise not_found("event not found")
        state = await self.state_before(head, event_id)
        return state, await self.auth_chain(head, [e.event_id for e in state])

    async def auth_chain(self, head: RoomHead, event_ids: list[str]) -> list[Event]:
        ids = await self.hs.db.run(store.auth_chain_ids, event_ids)
        if head.room_version.room_id_from_create:
            ids.add("$" + head.room_id[1:])
        loaded = await self._events(head, ids)
        return sorted(loaded.values(), key=lambda e: (e.depth, e.event_id))

    async def walk_back(self, head: RoomHead, starts: list[str], limit: int, stop: set[str], min_depth: int,
                        origin: str, include_start: bool) -> list[Event]:
        """Events before `starts` through prev_events, deepest first, that `origin` may
        see; not past `stop` or below `min_depth`; at most `limit`."""
        exposure = self.federation.exposure
        out: list[Event] = []
        seen = set(starts) | stop
        heap: list[tuple[int, str]] = []
        cache: dict[str, Event] = {}

        async def push(ids: list[str]) -> None:
            for eid, ev in (await self._events(head, ids)).items():
                if ev.room_id == head.room_id and not ev.rejected and ev.depth >= min_depth:
                    cache[eid] = ev
                    heapq.heappush(heap, (-ev.depth, eid))

        if include_start:
            await push(list(starts))
        else:
            first = await self._events(head, starts)
            prevs = [p for ev in first.values() if ev.room_id == head.room_id for p in ev.prev_event_ids]
            prevs = [p for p in dict.fromkeys(prevs) if p not in seen]
            seen.update(prevs)
            await push(prevs)
        while heap and len(out) < limit:
            _, event_id = heapq.heappop(heap)
            ev = cache[event_id]
            if await exposure.may_see_event(origin, head, event_id):
                out.append(ev)
            prevs = [p for p in ev.prev_event_ids if p not in seen]
            seen.update(prevs)
            await push(prevs)
        return out
