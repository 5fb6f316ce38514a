"""The legacy endpoints older bots and tools still use (deprecated since r0): the event
stream (GET /events), the whole-account snapshot (GET /initialSync) and one room's
snapshot (GET /rooms/{roomId}/initialSync). Built on the /sync engine, not beside it:
the same stream tokens, the notifier's long-poll (an idle poll never touches Postgres),
the room plans and timeline loading of the sync handler (cache first, one statement for
the rest) and the same history-visibility rules. Events come back as `Event` objects;
the client API serializes them."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from homeserver import visibility
from homeserver.errors import forbidden
from homeserver.event import Event
from homeserver.filtering import EventFilter, Filter
from homeserver.pagination import topo_token
from storage import event_stream as event_stream_store
from storage import sync as sync_store
from sync.sync_handler import RoomPlan
from sync.tokens import StreamToken

if TYPE_CHECKING:
    from homeserver.server import HomeServer
    from sync.engine import SyncEngine

STREAM_LIMIT = 100  # room events per /events answer; the `end` token continues after the last


@dataclass
class StreamChunk:
    start: StreamToken
    end: StreamToken
    events: list[Event] = field(default_factory=list)  # room events, in stream order
    ephemeral: list[dict] = field(default_factory=list)  # typing, receipts (with room_id), presence


@dataclass
class RoomSnapshot:
    room_id: str
    membership: str | None  # None: never a member (peeking into a world-readable room)
    visibility: str = "private"
    events: list[Event] = field(default_factory=list)  # the most recent visible ones, oldest first
    state: list[Event] = field(default_factory=list)
    start: str = ""
    end: str = ""
    account_data: list[dict] = field(default_factory=list)
    invite: Event | None = None


class LegacyEvents:
    def __init__(self, hs: "HomeServer", engine: "SyncEngine") -> None:
        self.hs = hs
        self.engine = engine

    # ---- GET /events ----------------------------------------------------------------

    async def stream(self, user_id: str, device_id: str, from_token: str | None, timeout_ms: int,
                     room_id: str | None) -> StreamChunk:
        """What happened in the user's rooms after `from_token` (default: now), waiting up
        to `timeout_ms` for something to happen. `room_id` narrows it to one of them."""
        engine, handler = self.engine, self.engine.handler
        start = StreamToken.parse(from_token) if from_token else engine.current_token()
        if room_id is not None:
            await visibility.require_can_read(self.hs, room_id, user_id)
            if room_id not in await engine.user_rooms.rooms_of(user_id):
                raise forbidden("peeking into a room you are not in is not supported: join it")
        since = start
        deadline = time.monotonic() + timeout_ms / 1000.0
        while True:
            chunk = await self._collect(user_id, start, since, room_id)
            if chunk.events or chunk.ephemeral or time.monotonic() >= deadline:
                return chunk
            # Nothing for this stream up to chunk.end: wait in memory for news after it.
            since = chunk.end
            while not await handler._has_news(user_id, device_id, since):
                remaining_ms = int((deadline - time.monotonic()) * 1000)
                if remaining_ms <= 0 or not await engine.notifier.wait(user_id, remaining_ms):
                    return StreamChunk(start, since)

    async def _collect(self, user_id: str, start: StreamToken, since: StreamToken,
                       only_room: str | None) -> StreamChunk:
        engine = self.engine
        now = engine.current_token()
        rooms = await engine.user_rooms.rooms_of(user_id)
        room_stream = engine.user_rooms.room_stream
        bounds = []
        for room_id, (membership, m_stream) in rooms.items():
            if only_room is not None and room_id != only_room:
                continue
            # A room the user left (or is invited to) streams up to that membership only.
            upto = now.events if membership == "join" else min(m_stream, now.events)
            if upto > since.events and room_stream.get(room_id, 0) > since.events:
                bounds.append((room_id, upto))
        end = now
        events: list[Event] = []
        if bounds:
            rows = await self.hs.db.run(event_stream_store.events_after, bounds, since.events, STREAM_LIMIT)
            if len(rows) == STREAM_LIMIT:  # more follow: the next call goes on after the last
                end = now.copy_with(events=rows[-1][1].stream_ordering)
            events = await self._visible(user_id, rows)
        joined = [r for r, (m, _) in rooms.items() if m == "join" and only_room in (None, r)]
        ephemeral = await self._ephemeral(user_id, joined, since, end, only_room is None)
        return StreamChunk(start, end, events, ephemeral)

    async def _visible(self, user_id: str, rows) -> list[Event]:
        room_ids = list({room_id for room_id, _ in rows})
        versions = {}
        for room_id in room_ids:
            head = await self.hs.room_heads.get(room_id)
            versions[room_id] = head.room_version.identifier if head else None

        def histories(cur):
            return (sync_store.membership_histories(cur, user_id, room_ids),
                    sync_store.visibility_histories(cur, room_ids))

        memberships, visibilities = await self.hs.db.run(histories)
        hists = {r: visibility.UserRoomHistory(memberships.get(r, []), visibilities.get(r, []), user_id)
                 for r in room_ids}
        out = []
        for room_id, stored in rows:
            if versions[room_id] is None:
                continue
            ev = self.hs.event_cache.from_stored_list([stored], versions[room_id])[0]
            if hists[room_id].may_see(ev):
                out.append(ev)
        return out

    async def _ephemeral(self, user_id: str, joined: list[str], since: StreamToken, now: StreamToken,
                         with_presence: bool) -> list[dict]:
        engine = self.engine
        out: list[dict] = []
        for room_id in joined:
            if engine.typing.changed_since(room_id, since.typing):
                out.append({"type": "m.typing", "room_id": room_id,
                            "content": {"user_ids": engine.typing.typing_users(room_id)}})
        if now.receipts > since.receipts and joined:
            await engine.handler._remember_receipt_streams(joined)
            changed = [r for r in joined if (engine.receipts.known_room_stream(r) or 0) > since.receipts]
            if changed:
                receipts = await engine.receipts.receipt_events(changed, since.receipts, now.receipts, user_id)
                out.extend(dict(ev, room_id=room_id) for room_id, ev in receipts.items())
        if with_presence and self.hs.config.presence.enabled:
            sharing = engine.sharing_users(user_id)
            out.extend(engine.presence.event_for(u) for u in sorted(engine.presence.changed_since(sharing, since.presence)))
        return out

    # ---- GET /initialSync -------------------------------------------------------------

    async def initial_sync(self, user_id: str, limit: int, archived: bool) -> dict[str, Any]:
        """{"end", "rooms": [RoomSnapshot], "presence", "account_data"}: the user's rooms
        (and with `archived` the ones they left) with their latest messages and state."""
        engine, handler = self.engine, self.engine.handler
        now = engine.current_token()
        rooms = await engine.user_rooms.rooms_of(user_id)
        filt = Filter()
        filt.room.include_leave = archived
        plans = handler._plan_rooms(user_id, rooms, None, {}, None, now, False, filt)
        ignored = await engine.account_data.ignored_users(user_id)
        await handler._load_timelines(user_id, plans, limit, EventFilter(), ignored=ignored)
        global_ad, room_ad = await engine.account_data.changed_since(user_id, 0)
        snapshots = []
        for plan in plans:
            head = await self.hs.room_heads.get(plan.room_id)
            if head is None:
                continue
            membership = rooms[plan.room_id][0]
            if plan.kind == "invite":
                snapshots.append(RoomSnapshot(plan.room_id, membership,
                                              invite=head.state.get(("m.room.member", user_id))))
                continue
            left = plan.kind != "join"
            snapshots.append(await self._snapshot(head, membership, plan, now, left, room_ad.get(plan.room_id, [])))
        presence = []
        if self.hs.config.presence.enabled:
            sharing = engine.sharing_users(user_id)
            presence = [engine.presence.event_for(u) for u in sorted(engine.presence.changed_since(sharing, 0))]
        return {"end": now.encode(), "rooms": snapshots, "presence": presence, "account_data": global_ad}

    async def _snapshot(self, head, membership: str | None, plan: RoomPlan, now: StreamToken, left: bool,
                        account_data: list[dict]) -> RoomSnapshot:
        """A room's snapshot from a loaded plan: current state, or for a departed user the
        state when they left."""
        if left:
            state_ids = await self.hs.db.run(sync_store.state_at_stream, plan.room_id, plan.upto)
            found = await self.hs.event_cache.get_many(list(state_ids.values()))
            state = [found[e] for e in state_ids.values() if e in found]
        else:
            state = list(head.state.values())
        first = plan.events[0] if plan.events else None
        return RoomSnapshot(
            plan.room_id, membership, "public" if head.is_public else "private", plan.events, state,
            start=topo_token((first.depth, first.stream_ordering or 0)) if first else f"s{plan.upto}",
            end=f"s{plan.upto}" if left else now.encode(), account_data=account_data)

    # ---- GET /rooms/{roomId}/initialSync ------------------------------------------------

    async def room_initial_sync(self, user_id: str, room_id: str, limit: int) -> RoomSnapshot:
        """One room, for members, past members (as it was when they left) and peekers of
        world-readable rooms; anything else is refused exactly as an unknown room."""
        hist = await visibility.require_can_read(self.hs, room_id, user_id)
        head = await self.hs.room_heads.get(room_id)
        assert head is not None  # require_can_read refuses unknown rooms
        now = self.engine.current_token()
        membership = head.membership_of(user_id)
        left = membership != "join" and bool(hist.memberships)
        upto = hist.memberships[-1][0] if left else now.events
        plan = RoomPlan(room_id, "join" if membership == "join" else "leave", True, 0, upto, True)
        ignored = await self.engine.account_data.ignored_users(user_id)
        await self.engine.handler._load_timelines(user_id, [plan], limit, EventFilter(), ignored=ignored)
        _, room_ad = await self.engine.account_data.changed_since(user_id, 0)
        return await self._snapshot(head, membership, plan, now, left, room_ad.get(room_id, []))
