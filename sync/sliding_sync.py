"""Simplified sliding sync (MSC4186), as Synapse serves it on
`/_matrix/client/unstable/org.matrix.simplified_msc3575/sync`.

One request: the user's rooms in activity order (`sync/room_list.py`), each list filtered
and counted in one pass, its windows taken by index; rooms of the windows and of the
subscriptions are sent if the connection (`sync/sliding_connections.py`) never had them,
had them with fewer events or less state than now asked for, or they changed since it
last had them. Timelines, visibility, ignored users, serialization, summaries and
stripped state are /sync's own (`SyncHandler`'s public hooks), so both APIs serve the same
events the same way. When nothing is new, the request waits on the notifier like /sync:
a waiting request is woken only by what concerns its user, and checking that, or
building a response that turns out empty, reads only memory."""
from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable

from homeserver.filtering import EventFilter
from homeserver.pagination import topo_token
from storage import sync as sync_store
from sync import sliding_extensions
from sync.room_list import newest_first
from sync.room_tags import RoomTags, RoomTagsOfUser
from sync.sliding_connections import ConnState, Connections, RoomSent
from sync.sliding_request import MEMBER, ListFilters, RoomConfig, SlidingRequest
from sync.sync_handler import RoomPlan
from sync.tokens import StreamToken

if TYPE_CHECKING:
    from homeserver.event import Event
    from homeserver.room_heads import RoomHead
    from homeserver.server import HomeServer
    from sync.engine import SyncEngine

STRIPPED = ("invite", "knock")
_ALL_EVENTS = EventFilter()  # sliding sync timelines are unfiltered


class _Send:
    """One room going into this response."""
    __slots__ = ("room_id", "config", "membership", "m_stream", "initial", "expanded_timeline",
                 "expanded_state", "lower", "sent", "plan")

    def __init__(self, room_id: str, config: RoomConfig, membership: str, m_stream: int, initial: bool,
                 lower: int, sent: RoomSent | None, expanded_timeline: bool = False,
                 expanded_state: bool = False) -> None:
        self.room_id = room_id
        self.config = config
        self.membership = membership
        self.m_stream = m_stream
        self.initial = initial
        self.lower = lower
        self.sent = sent
        self.expanded_timeline = expanded_timeline
        self.expanded_state = expanded_state
        self.plan: RoomPlan | None = None


class SlidingSync:
    def __init__(self, hs: "HomeServer", engine: "SyncEngine") -> None:
        self.hs = hs
        self.engine = engine
        cfg = hs.config.sliding_sync
        self.connections = Connections(cfg.max_connections, cfg.connection_ttl_seconds)
        self.tags = RoomTags(hs, engine)

    async def sync(self, user_id: str, device_id: str, req: SlidingRequest, pos: str | None,
                   timeout_ms: int) -> dict[str, Any]:
        key = (user_id, device_id, req.conn_id)
        if pos is None:
            self.connections.start(key)
            prev = None
        else:
            prev = self.connections.state(key, pos)
        presence_on = self.hs.config.presence.enabled
        if presence_on:
            self.engine.presence.sync_started(user_id, None)
        try:
            return await self._sync(key, user_id, device_id, req, prev, timeout_ms)
        finally:
            if presence_on:
                self.engine.presence.sync_finished(user_id)

    async def _sync(self, key, user_id: str, device_id: str, req: SlidingRequest, prev: ConnState | None,
                    timeout_ms: int) -> dict[str, Any]:
        notifier = self.engine.notifier
        deadline = time.monotonic() + timeout_ms / 1000.0
        while True:
            result, state, news = await self._build(user_id, device_id, req, prev)
            if news or prev is None or notifier.closing:
                break
            # Wait in memory until something concerns the user after this response's token.
            while not await self.engine.handler.has_news(user_id, device_id, state.token):
                remaining_ms = int((deadline - time.monotonic()) * 1000)
                if remaining_ms <= 0 or notifier.closing:
                    break
                await notifier.wait(user_id, remaining_ms)
            else:
                continue  # something happened: build again (it may not concern this connection)
            break
        result["pos"] = self.connections.record(key, state)
        return result

    # ---- one response ----------------------------------------------------------------

    async def _build(self, user_id: str, device_id: str, req: SlidingRequest,
                     prev: ConnState | None) -> tuple[dict[str, Any], ConnState, bool]:
        engine = self.engine
        now = engine.current_token()
        since = prev.token if prev is not None else None
        rooms = await engine.user_rooms.rooms_of(user_id)
        await self.hs.push.counts.ensure_loaded(user_id)
        ignored = await engine.account_data.ignored_users(user_id)
        order = await engine.room_list.ordered(user_id, rooms)
        tags = await self.tags.get(user_id)
        hidden = await self._hidden_invites(user_id, rooms, ignored)
        forgotten = engine.user_rooms.forgotten(user_id)
        sent_before = prev.rooms if prev is not None else {}

        def listed(room_id: str) -> bool:
            membership, m_stream = rooms[room_id]
            if m_stream > now.events or room_id in forgotten:
                return False
            if membership == "leave" and room_id in order.self_left:
                # Left by the user: shown once, to a connection that had the room.
                return since is not None and m_stream > since.events and room_id in sent_before
            return not (membership == "invite" and room_id in hidden)

        relevant: dict[str, RoomConfig] = {}
        list_rooms: dict[str, list[str]] = {}
        lists_out: dict[str, Any] = {}
        new_lists: dict[str, tuple[int, tuple[str, ...]]] = {}
        news = False
        for list_key, lst in req.lists.items():
            match = await self._filter(user_id, lst.filters, rooms, tags)
            ranges = lst.ranges
            count = 0
            window: list[tuple[int, str]] = []
            for room_id in newest_first(order):
                if not listed(room_id) or (match is not None and not match(room_id)):
                    continue
                if ranges is None or any(a <= count <= b for a, b in ranges):
                    window.append((count, room_id))
                count += 1
            ids = [r for _, r in window]
            list_rooms[list_key] = ids
            for room_id in ids:
                cfg = relevant.get(room_id)
                relevant[room_id] = lst.config if cfg is None else cfg.merge(lst.config)
            spans = ranges if ranges is not None else ((0, max(count - 1, 0)),)
            lists_out[list_key] = {"count": count, "ops": [
                {"op": "SYNC", "range": [a, min(b, count - 1)] if count else [a, b],
                 "room_ids": [r for i, r in window if a <= i <= b]} for a, b in spans]}
            new_lists[list_key] = (count, tuple(ids))
            if prev is not None and prev.lists.get(list_key) != new_lists[list_key]:
                news = True

        subscribed: set[str] = set()
        for room_id, cfg in req.subscriptions.items():
            # A room the user may not see (never a member, another tenant's, unknown) is
            # ignored, as Synapse ignores unknown rooms.
            if room_id not in rooms or rooms[room_id][1] > now.events or room_id in hidden \
                    or room_id in forgotten or await self.hs.tenancy.head_for(user_id, room_id) is None:
                continue
            subscribed.add(room_id)
            known = relevant.get(room_id)
            relevant[room_id] = cfg if known is None else known.merge(cfg)

        sends = self._choose(user_id, relevant, rooms, sent_before, since)
        await self._load_timelines(user_id, sends, since, now, ignored)
        device_key = f"{user_id}|{device_id}"
        rooms_out: dict[str, Any] = {}
        new_rooms = dict(sent_before)
        for send in sends:
            entry, members = await self._room_entry(user_id, send, since, now, device_key, tags, ignored)
            sent = send.sent
            if entry is None:
                if send.membership in STRIPPED:  # an invite from someone now ignored: not shown
                    continue
            else:
                rooms_out[send.room_id] = entry
            limited = send.plan.limited if send.plan is not None else False
            keep_limit = send.config.timeline_limit
            if sent is not None and not (send.initial or send.expanded_timeline or limited):
                keep_limit = max(keep_limit, sent.config.timeline_limit)  # the client has that many
            new_rooms[send.room_id] = RoomSent(True, now.events, send.membership,
                                               RoomConfig(keep_limit, send.config.required), members)
        if since is not None:
            # Rooms the client has that changed and were not sent: it lacks what came after
            # the previous token, to be sent when they are next in a window.
            room_stream = engine.user_rooms.room_stream
            sent_now = {s.room_id for s in sends}
            for room_id, sent in sent_before.items():
                if sent.live and room_id not in sent_now and room_stream.get(room_id, 0) > since.events:
                    new_rooms[room_id] = replace(sent, live=False, upto=since.events)
        news = news or bool(rooms_out)

        ctx = sliding_extensions.ExtensionContext(
            user_id, device_id, since, now, rooms, list_rooms, subscribed,
            initial={s.room_id for s in sends if s.initial},
            timelines={s.room_id: s.plan.events for s in sends if s.plan is not None})
        extensions, ext_news, to_device_pos = await sliding_extensions.build(self.hs, engine, req, ctx)
        state = ConnState(now.copy_with(to_device=to_device_pos), new_rooms, new_lists)
        result: dict[str, Any] = {"lists": lists_out, "rooms": rooms_out, "extensions": extensions}
        return result, state, news or ext_news

    async def _hidden_invites(self, user_id: str, rooms: dict[str, tuple[str, int]],
                              ignored: frozenset[str]) -> set[str]:
        """Invites sent by users the user ignores: not shown (as /sync)."""
        if not ignored:
            return set()
        hidden = set()
        for room_id, (membership, _) in rooms.items():
            if membership == "invite":
                head = await self.hs.room_heads.get(room_id)
                invite = head.state.get((MEMBER, user_id)) if head is not None else None
                if invite is not None and invite.sender in ignored:
                    hidden.add(room_id)
        return hidden

    async def _filter(self, user_id: str, f: ListFilters | None, rooms: dict[str, tuple[str, int]],
                      tags: RoomTagsOfUser) -> Callable[[str], bool] | None:
        if f is None:
            return None
        heads: dict[str, RoomHead | None] = {}
        if f.needs_head:
            for room_id in rooms:
                heads[room_id] = await self.hs.room_heads.get(room_id)
        children: set[str] | None = None
        if f.spaces is not None:
            children = set()
            for space_id in f.spaces:
                # Only spaces the user is joined to count; others are ignored (the MSC).
                if rooms.get(space_id, ("",))[0] != "join":
                    continue
                space = await self.hs.tenancy.head_for(user_id, space_id)
                for (event_type, state_key), ev in (space.state.items() if space is not None else ()):
                    via = ev.content.get("via")
                    if event_type == "m.space.child" and isinstance(via, list) and via:
                        children.add(state_key)

        def match(room_id: str) -> bool:
            membership = rooms[room_id][0]
            if f.is_dm is not None and (room_id in tags.direct) != f.is_dm:
                return False
            if f.is_invite is not None and (membership == "invite") != f.is_invite:
                return False
            if children is not None and room_id not in children:
                return False
            if f.needs_head:
                head = heads.get(room_id)
                state = head.state if head is not None else {}
                if f.is_encrypted is not None and (("m.room.encryption", "") in state) != f.is_encrypted:
                    return False
                create = state.get(("m.room.create", ""))
                room_type = create.content.get("type") if create is not None else None
                if not isinstance(room_type, str):
                    room_type = None
                if f.room_types is not None and room_type not in f.room_types:
                    return False
                if f.not_room_types is not None and room_type in f.not_room_types:
                    return False
            room_tags = tags.tags.get(room_id, frozenset())
            if f.tags is not None and not any(t in room_tags for t in f.tags):
                return False
            return not (f.not_tags is not None and any(t in room_tags for t in f.not_tags))
        return match

    def _choose(self, user_id: str, relevant: dict[str, RoomConfig], rooms: dict[str, tuple[str, int]],
                sent_before: dict[str, RoomSent], since: StreamToken | None) -> list[_Send]:
        """The relevant rooms this response carries, and from where."""
        room_stream = self.engine.user_rooms.room_stream
        counts = self.hs.push.counts
        out = []
        for room_id, cfg in relevant.items():
            membership, m_stream = rooms[room_id]
            sent = sent_before.get(room_id)
            if since is None or sent is None or (sent.membership in STRIPPED and membership not in STRIPPED):
                out.append(_Send(room_id, cfg, membership, m_stream, True, 0, sent))
                continue
            lower = since.events if sent.live else sent.upto
            if membership in STRIPPED:
                if m_stream > lower:
                    out.append(_Send(room_id, cfg, membership, m_stream, True, 0, sent))
                continue
            grew_timeline = cfg.timeline_limit > sent.config.timeline_limit
            grew_state = not sent.config.required.covers(cfg.required)
            upto = room_stream.get(room_id, 0) if membership == "join" else m_stream
            if grew_timeline or grew_state or upto > lower or m_stream > lower or (
                    membership == "join" and counts.reset_since(user_id, room_id, since.receipts)):
                out.append(_Send(room_id, cfg, membership, m_stream, False, lower, sent,
                                 grew_timeline, grew_state))
        return out

    async def _load_timelines(self, user_id: str, sends: list[_Send], since: StreamToken | None,
                              now: StreamToken, ignored: frozenset[str]) -> None:
        # One call per (timeline limit, new to the client or not): the timeline cache or
        # one statement each.
        groups: dict[tuple[int, bool], list[RoomPlan]] = {}
        for send in sends:
            if send.membership in STRIPPED or send.config.timeline_limit == 0:
                continue
            joined = send.membership == "join"
            upto = now.events if joined else send.m_stream
            fresh = send.initial or send.expanded_timeline
            send.plan = RoomPlan(send.room_id, "join" if joined else "leave", fresh,
                                 0 if fresh else send.lower, upto, fresh or not joined, send.m_stream)
            groups.setdefault((send.config.timeline_limit, fresh), []).append(send.plan)
        for (limit, fresh), plans in groups.items():
            await self.engine.handler.load_timelines(user_id, plans, limit, _ALL_EVENTS,
                                                     None if fresh else since, ignored)

    async def _room_entry(self, user_id: str, send: _Send, since: StreamToken | None, now: StreamToken,
                          device_key: str, tags: RoomTagsOfUser,
                          ignored: frozenset[str]) -> tuple[dict[str, Any] | None, frozenset[str]]:
        """The room's entry (None when it has nothing new) and the members the client has."""
        room_id = send.room_id
        handler = self.engine.handler
        bump = self.engine.room_list.bump_stamp(room_id, send.membership, send.m_stream)
        if send.membership in STRIPPED:
            stripped = await handler.stripped_state(room_id, user_id, send.membership, ignored)
            if stripped is None:
                return None, frozenset()
            return {"initial": True, "invite_state": stripped, "bump_stamp": bump,
                    "notification_count": 0, "highlight_count": 0}, frozenset()
        head = await self.hs.room_heads.get(room_id)
        if head is None:
            return None, frozenset()
        joined = send.membership == "join"
        plan = send.plan
        events: list[Event] = plan.events if plan is not None else []
        limited = plan.limited if plan is not None else False
        if joined:
            state_map = head.state
        else:  # as it stood when the user left
            state_ids = await self.hs.db.run(sync_store.state_at_stream, room_id, send.m_stream)
            found = await self.hs.event_cache.get_many(list(state_ids.values()))
            state_map = {k: found[v] for k, v in state_ids.items() if v in found}
        full_state = send.initial or send.expanded_state
        if full_state:
            deltas: list[Event] = []
        elif limited or plan is None:
            lower = send.lower
            upto = now.events if joined else send.m_stream
            deltas = [e for e in state_map.values()
                      if e.stream_ordering is not None and lower < e.stream_ordering <= upto]
        else:  # every event since the client's position is in the timeline
            deltas = [e for e in events if e.state_key is not None and state_map.get(e.key) is e]
        state, members = self._required_state(user_id, send, state_map, deltas, events, limited)

        entry: dict[str, Any] = {}
        changed = {e.key for e in deltas}
        name_ev = state_map.get(("m.room.name", ""))
        name = name_ev.content.get("name") if name_ev is not None else None
        name = name if isinstance(name, str) and name else None
        if send.initial or ("m.room.name", "") in changed:
            if name:
                entry["name"] = name
        if send.initial or ("m.room.avatar", "") in changed:
            avatar_ev = state_map.get(("m.room.avatar", ""))
            url = avatar_ev.content.get("url") if avatar_ev is not None else None
            if isinstance(url, str) and url:
                entry["avatar"] = url
        if joined:
            summary = handler.room_summary(head, user_id)
            if "m.heroes" in summary and not name and (send.initial or any(t == MEMBER for t, _ in changed)):
                entry["heroes"] = [self._hero(state_map, u) for u in summary["m.heroes"]]
            entry["joined_count"] = summary["m.joined_member_count"]
            entry["invited_count"] = summary["m.invited_member_count"]
            unread, _ = self.hs.push.counts.for_sync(user_id, room_id, False)
            entry.update(unread)
        if send.initial:
            entry["initial"] = True
        if send.expanded_timeline and not send.initial:
            entry["unstable_expanded_timeline"] = True
        if room_id in tags.direct:
            entry["is_dm"] = True
        if state:
            entry["required_state"] = await handler.serialize(state, device_key, None)
        if plan is not None:
            bundle_for = user_id if joined and (limited or plan.full) else None
            entry["timeline"] = await handler.serialize(events, device_key, bundle_for)
            entry["limited"] = limited
            entry["num_live"] = sum(1 for e in events if since is not None
                                    and (e.stream_ordering or 0) > since.events)
            if events:
                entry["prev_batch"] = topo_token((events[0].depth, events[0].stream_ordering or 0))
            else:
                entry["prev_batch"] = f"s{plan.upto}"
        entry["bump_stamp"] = bump
        has_news = send.initial or send.expanded_timeline or bool(events) or bool(state) or "name" in entry \
            or "avatar" in entry or "heroes" in entry or (joined and since is not None and send.sent is not None
                                                          and self.hs.push.counts.reset_since(
                                                              user_id, room_id, since.receipts))
        return (entry if has_news else None), members

    def _required_state(self, user_id: str, send: _Send, state_map: dict, deltas: list["Event"],
                        events: list["Event"], limited: bool) -> tuple[list["Event"], frozenset[str]]:
        """The state to send and the members the client will have. New to the client (or
        asked for more): everything `required_state` matches; else the changes it
        matches. With $LAZY: the member events of the timeline's senders and targets the
        client lacks, and in a gapless update every membership change."""
        required = send.config.required
        full = send.initial or send.expanded_state
        had = send.sent.members if send.sent is not None and not full and not limited else frozenset()
        chosen: dict = {}
        if full:
            if required.everything:
                chosen = dict(state_map)
            else:
                for key in required.wanted_keys(user_id):
                    if key in state_map:
                        chosen[key] = state_map[key]
                if required.any_key or required.any_type:
                    for key, ev in state_map.items():
                        if key[0] in required.any_key or key[1] in required.any_type:
                            chosen[key] = ev
        else:
            for ev in deltas:
                if required.matches(ev.type, ev.state_key, user_id) or (
                        required.lazy and ev.type == MEMBER and not limited):
                    chosen[ev.key] = ev
        if required.lazy and not required.all_members:
            needed = {e.sender for e in events}
            needed.update(e.state_key for e in events if e.type == MEMBER and e.state_key)
            for member in needed - had:
                ev = state_map.get((MEMBER, member))
                if ev is not None:
                    chosen[ev.key] = ev
        members = set(had) if required.lazy else set()
        members.update(k[1] for k in chosen if k[0] == MEMBER)
        return list(chosen.values()), frozenset(members)

    @staticmethod
    def _hero(state_map: dict, user_id: str) -> dict[str, Any]:
        hero: dict[str, Any] = {"user_id": user_id}
        ev = state_map.get((MEMBER, user_id))
        if ev is not None:
            if isinstance(ev.content.get("displayname"), str):
                hero["displayname"] = ev.content["displayname"]
            if isinstance(ev.content.get("avatar_url"), str):
                hero["avatar_url"] = ev.content["avatar_url"]
        return hero
