"""State of remote rooms at events: state groups read (and cached: a group never
changes), events loaded with their rejection flag, state resolution run off the reactor
over the events it needs, and new state groups described as deltas where possible."""
from __future__ import annotations

import json
from collections import OrderedDict
from typing import TYPE_CHECKING, Iterable

from twisted.internet import threads

from homeserver import state_res
from homeserver.event import Event, StateKey
from homeserver.event_cache import event_from_stored
from homeserver.room_versions import RoomVersion
from storage import events as events_store
from storage import federation as store
from storage.events import NewStateGroup

if TYPE_CHECKING:
    from homeserver.server import HomeServer

StateMap = dict[StateKey, str]
GROUP_CACHE = 2000


class StateAccess:
    def __init__(self, hs: "HomeServer") -> None:
        self.hs = hs
        self._groups: OrderedDict[int, tuple[StateMap, int]] = OrderedDict()
        self._rejected: dict[str, Event] = {}

    # ---- state groups ------------------------------------------------------------------

    async def group(self, group: int) -> tuple[StateMap, int]:
        """(state map, chain length) of a state group; 0 is the empty state."""
        if group == 0:
            return {}, 0
        hit = self._groups.get(group)
        if hit is None:
            hit = await self.hs.db.run(store.state_group_with_chain, group)
            self._groups[group] = hit
            while len(self._groups) > GROUP_CACHE:
                self._groups.popitem(last=False)
        else:
            self._groups.move_to_end(group)
        return hit

    def remember_group(self, group: int, state: StateMap, chain: int) -> None:
        self._groups[group] = (dict(state), chain)

    def describe_group(self, room_id: str, state: StateMap, base: tuple[int, StateMap, int] | None) -> tuple[NewStateGroup, int]:
        """A new group holding `state`: a delta on `base` (group, its map, chain length)
        when nothing is removed and the chain is short enough, else a full snapshot."""
        group_id = self.hs.persister.allocate_state_group()
        limit = self.hs.config.rooms.max_state_delta_chain
        if base is not None and base[0] != 0 and base[2] + 1 < limit and set(base[1]) <= set(state):
            delta = {k: v for k, v in state.items() if base[1].get(k) != v}
            new = NewStateGroup(group_id, base[0], base[2] + 1, delta)
        else:
            new = NewStateGroup(group_id, None, 0, dict(state))
        self.remember_group(group_id, state, new.chain_length)
        return new, new.chain_length

    # ---- events ------------------------------------------------------------------------

    async def events(self, event_ids: Iterable[str], rv: RoomVersion) -> dict[str, Event]:
        """Stored events (timeline, outliers) and rejected ones (flagged) by id."""
        ids = list(dict.fromkeys(event_ids))
        found: dict[str, Event] = {}
        missing = []
        for eid in ids:
            ev = self.hs.event_cache.peek(eid) or self._rejected.get(eid)
            if ev is not None:
                found[eid] = ev
            else:
                missing.append(eid)
        if missing:
            stored = await self.hs.db.run(events_store.get_events, missing)
            for eid, st in stored.items():
                ev = event_from_stored(st, rv.identifier)
                self.hs.event_cache.put(ev)
                found[eid] = ev
            rest = [e for e in missing if e not in stored]
            if rest:
                for eid, text in (await self.hs.db.run(store.get_rejected, rest)).items():
                    ev = Event(eid, rv, json.loads(text), rejected=True)
                    self._rejected[eid] = ev
                    found[eid] = ev
        return found

    def remember_rejected(self, event: Event) -> None:
        event.rejected = True
        self._rejected[event.event_id] = event

    # ---- resolution --------------------------------------------------------------------

    async def resolve(self, rv: RoomVersion, room_id: str, states: list[StateMap],
                      extra: dict[str, Event] | None = None) -> StateMap:
        """State resolution of `states` (pure, in a thread), loading the events it may
        need: every event of the states and their auth chains. `extra` holds events not
        stored yet."""
        distinct = [dict(s) for s in {tuple(sorted(s.items())): s for s in states}.values()]
        if len(distinct) <= 1:
            return dict(distinct[0]) if distinct else {}
        keys = set().union(*distinct)
        if rv.state_res == "v1" and all(len({s[k] for s in distinct if k in s}) == 1 for k in keys):
            # v1 counts a key as conflicted only where two states disagree on it.
            return {k: next(s[k] for s in distinct if k in s) for k in keys}
        ids = {eid for s in distinct for eid in s.values()}
        extra = extra or {}
        stored_ids = [e for e in ids if e not in extra]
        chain = await self.hs.db.run(store.auth_chain_ids, stored_ids)
        for ev in extra.values():
            chain.update(ev.auth_parent_ids)
        if rv.room_id_from_create:
            chain.add("$" + room_id[1:])
        events = dict(extra)
        events.update(await self.events([e for e in ids | chain if e not in extra], rv))
        return await threads.deferToThread(state_res.resolve_state, rv, distinct, events)
