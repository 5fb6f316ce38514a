"""GET /sync: initial and incremental, long-polling through the notifier.

Work is bounded: an idle incremental sync reads only memory (room stream positions,
ephemeral streams, account-data and to-device positions); a sync with news reads the
changed rooms' timelines in one statement (or from the in-memory timeline cache), and
history-visibility data in two more when rooms are sent in full."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any


from homeserver import visibility
from homeserver.event import Event
from homeserver.filtering import EventFilter, Filter, apply_event_fields
from homeserver.pagination import topo_token
from homeserver.redaction import prune_event_dict
from homeserver.serialize import client_fragment, serialize_event
from storage import sync as sync_store
from sync.tokens import StreamToken

if TYPE_CHECKING:
    from homeserver.server import HomeServer
    from sync.engine import SyncEngine

DEFAULT_TIMELINE_LIMIT = 10
MAX_TIMELINE_LIMIT = 500
STRIPPED_STATE_TYPES = ("m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar",
                        "m.room.canonical_alias", "m.room.encryption", "m.room.topic")


@dataclass
class RoomPlan:
    room_id: str
    kind: str            # join | invite | knock | leave
    full: bool           # send full state (initial sync, new join, full_state)
    after: int           # timeline range (after, upto]
    upto: int
    check_visibility: bool
    membership_stream: int = 0
    events: list[Event] = field(default_factory=list)
    limited: bool = False


class SyncHandler:
    def __init__(self, hs: "HomeServer", engine: "SyncEngine") -> None:
        self.hs = hs
        self.engine = engine
        self._receipts_loaded: set[str] = set()
        # room -> [(stream, history_visibility)], loaded on first use, then written through
        self._visibility: dict[str, list[tuple[int, str]]] = {}

    async def sync(self, user_id: str, device_id: str, since_token: str | None, timeout_ms: int,
                   full_state: bool, filt: Filter, set_presence: str | None) -> dict[str, Any]:
        since = StreamToken.parse(since_token) if since_token else None
        presence_on = self.hs.config.presence.enabled
        if presence_on:
            self.engine.presence.sync_started(user_id, set_presence)
        try:
            deadline = time.monotonic() + timeout_ms / 1000.0
            check_from = since
            must_wait = False
            while True:
                if check_from is not None and not full_state:
                    # Wait in memory until something concerns this user: an idle
                    # long-poll never touches Postgres.
                    while must_wait or not await self._has_news(user_id, device_id, check_from):
                        remaining_ms = int((deadline - time.monotonic()) * 1000)
                        if remaining_ms <= 0:
                            break
                        must_wait = False
                        await self.engine.notifier.wait(user_id, remaining_ms)
                result, has_news = await self._build(user_id, device_id, since, full_state, filt)
                if has_news or since is None or full_state or time.monotonic() >= deadline:
                    return result
                # What woke us was filtered out: wait for the next wake-up (never spin)
                # and then for anything newer than this.
                check_from = StreamToken.parse(result["next_batch"])
                must_wait = True
        finally:
            if presence_on:
                self.engine.presence.sync_finished(user_id)

    async def _has_news(self, user_id: str, device_id: str, since: StreamToken) -> bool:
        engine = self.engine
        rooms = await engine.user_rooms.rooms_of(user_id)
        ad_stream = await engine.account_data.user_stream(user_id)
        td_stream = await engine.to_device.pending_stream(user_id, device_id)
        # From here on nothing awaits, so no wake-up can slip between check and wait.
        room_stream = engine.user_rooms.room_stream
        for room_id, (membership, m_stream) in rooms.items():
            if room_stream.get(room_id, 0) > since.events or m_stream > since.events:
                return True
            if membership == "join" and self._ephemeral_changed(room_id, since):
                return True
        if ad_stream > since.account_data or td_stream > since.to_device:
            return True
        device_changes = engine.device_lists.changed_in_memory(since.device_lists)
        if not self.hs.config.presence.enabled and not device_changes:
            return False
        sharing = engine.sharing_users(user_id)  # walked once, only when it can matter
        if self.hs.config.presence.enabled and engine.presence.changed_since(sharing, since.presence):
            return True
        return bool(device_changes & sharing)

    # ---- building one response ----------------------------------------------------

    async def _build(self, user_id: str, device_id: str, since: StreamToken | None,
                     full_state: bool, filt: Filter) -> tuple[dict[str, Any], bool]:
        engine = self.engine
        now = engine.current_token()
        rooms = await engine.user_rooms.rooms_of(user_id)
        await self._remember_receipt_streams(list(rooms))
        timeline_filter = filt.room.timeline
        limit = min(timeline_filter.limit if timeline_filter.limit is not None else DEFAULT_TIMELINE_LIMIT,
                    MAX_TIMELINE_LIMIT)
        plans = self._plan_rooms(user_id, rooms, since, now, full_state, filt)
        await self._load_timelines(user_id, plans, limit, timeline_filter)

        device_key = f"{user_id}|{device_id}"
        join: dict[str, Any] = {}
        invite: dict[str, Any] = {}
        knock: dict[str, Any] = {}
        leave: dict[str, Any] = {}
        receipts = await self._receipts(plans, since, now, user_id)
        global_ad, room_ad = await self._account_data(user_id, since, now)
        for plan in plans:
            if plan.kind == "invite":
                invite[plan.room_id] = await self._invite_entry(plan.room_id, user_id)
                continue
            if plan.kind == "knock":
                knock_state = await self._stripped_state(plan.room_id, user_id)
                knock[plan.room_id] = {"knock_state": {"events": knock_state}}
                continue
            entry = await self._room_entry(plan, user_id, since, now, filt, device_key,
                                           receipts.get(plan.room_id), room_ad.get(plan.room_id, []))
            if entry is None:
                continue
            (join if plan.kind == "join" else leave)[plan.room_id] = entry

        to_device, to_device_pos = await engine.to_device.fetch(
            user_id, device_id, since.to_device if since else 0)
        changed = await self._device_list_changes(since, now)
        sharing = engine.sharing_users(user_id)  # once per response: it walks every room
        presence_events = self._presence(sharing, since, filt)
        changed &= sharing
        next_token = now.copy_with(to_device=to_device_pos)
        result: dict[str, Any] = {
            "next_batch": next_token.encode(),
            "rooms": {"join": join, "invite": invite, "leave": leave, "knock": knock},
            "account_data": {"events": [e for e in global_ad if filt.account_data.allows(e["type"], user_id)]},
            "presence": {"events": presence_events},
            "to_device": {"events": to_device},
            "device_lists": {"changed": sorted(changed),
                             "left": sorted(self._no_longer_sharing(user_id, plans, sharing) if since else ())},
        }
        if device_id:
            otk_counts, fallback_types = await engine.e2e_counts.get(user_id, device_id)
            result["device_one_time_keys_count"] = otk_counts
            result["device_unused_fallback_key_types"] = fallback_types
        has_news = bool(join or invite or knock or leave or global_ad or presence_events or to_device or changed)
        return result, has_news

    def _plan_rooms(self, user_id: str, rooms: dict[str, tuple[str, int]], since: StreamToken | None,
                    now: StreamToken, full_state: bool, filt: Filter) -> list[RoomPlan]:
        plans = []
        forgotten = self.engine.user_rooms.forgotten(user_id)
        room_stream = self.engine.user_rooms.room_stream
        for room_id, (membership, m_stream) in rooms.items():
            if not filt.room.allows_room(room_id) or m_stream > now.events:
                continue
            if membership == "join":
                if since is None or m_stream > since.events:
                    plans.append(RoomPlan(room_id, "join", True, 0, now.events, True, m_stream))
                elif full_state:  # every room with its full state, the timeline still from `since`
                    plans.append(RoomPlan(room_id, "join", True, since.events, now.events, False, m_stream))
                elif room_stream.get(room_id, 0) > since.events or self._ephemeral_changed(room_id, since):
                    plans.append(RoomPlan(room_id, "join", False, since.events, now.events, False, m_stream))
            elif membership in ("invite", "knock"):
                if since is None or m_stream > since.events:
                    plans.append(RoomPlan(room_id, membership, True, 0, 0, False, m_stream))
            elif membership in ("leave", "ban") and room_id not in forgotten:
                if since is not None and m_stream > since.events:
                    plans.append(RoomPlan(room_id, "leave", False, since.events, m_stream, True, m_stream))
                elif since is None and filt.room.include_leave:
                    plans.append(RoomPlan(room_id, "leave", True, 0, m_stream, True, m_stream))
        return plans

    def _ephemeral_changed(self, room_id: str, since: StreamToken) -> bool:
        if self.engine.typing.changed_since(room_id, since.typing):
            return True
        s = self.engine.receipts.known_room_stream(room_id)
        return s is not None and s > since.receipts

    async def _remember_receipt_streams(self, room_ids: list[str]) -> None:
        receipts = self.engine.receipts
        unknown = [r for r in room_ids if receipts.known_room_stream(r) is None and r not in self._receipts_loaded]
        if unknown:
            from storage import receipts as receipts_store
            receipts.remember_room_streams(await self.hs.db.run(receipts_store.latest_per_room, unknown))
            self._receipts_loaded.update(unknown)

    async def _load_timelines(self, user_id: str, plans: list[RoomPlan], limit: int,
                              tf: EventFilter) -> None:
        need_db = []
        cache = self.engine.timeline_cache
        for plan in plans:
            if plan.kind in ("invite", "knock"):
                continue
            cached = cache.tail(plan.room_id, plan.after, plan.upto, limit,
                                None if tf.passes_all else lambda e: tf.allows(e.type, e.sender, e.content))
            if cached is not None:
                plan.events, plan.limited = cached
            else:
                need_db.append(plan)
        if need_db:
            rows = await self.hs.db.run(
                sync_store.timelines, [(p.room_id, p.after, p.upto) for p in need_db], limit + 1,
                tf.sql_lists())
            for plan in need_db:
                head = await self.hs.room_heads.get(plan.room_id)
                stored = rows.get(plan.room_id, [])
                events = self.hs.event_cache.from_stored_list(stored, head.room_version.identifier)
                events = [e for e in events if tf.allows(e.type, e.sender, e.content)]
                plan.limited = len(stored) > limit
                plan.events = events[-limit:] if limit else []
        checked = [p for p in plans if p.check_visibility and p.events]
        unknown = [p.room_id for p in checked if p.room_id not in self._visibility]
        visibility_of = self._visibility
        if unknown:
            before = self.hs.persister.max_stream_ordering
            found = await self.hs.db.run(sync_store.visibility_histories, unknown)
            visibility_of = dict(self._visibility)
            for room_id in unknown:
                visibility_of[room_id] = found.get(room_id, [])
                if self.hs.persister.max_stream_ordering == before:  # else a change may be missing
                    self._visibility.setdefault(room_id, visibility_of[room_id])
        # A joined member of a room that was never more private than "shared" may see
        # all of its history: only the other rooms need the membership history.
        checked = [p for p in checked if not (
            p.kind == "join" and all(v in ("shared", "world_readable") for _, v in visibility_of[p.room_id]))]
        if checked:
            ids = [p.room_id for p in checked]
            memberships = await self.hs.db.run(sync_store.membership_histories, user_id, ids)
            for plan in checked:
                hist = visibility.UserRoomHistory(memberships.get(plan.room_id, []),
                                                  visibility_of[plan.room_id], user_id)
                plan.events = [e for e in plan.events if hist.may_see(e)]

    def on_events(self, events: list[Event]) -> None:
        """Keep the cached history-visibility changes of known rooms current."""
        for ev in events:
            if ev.type == "m.room.history_visibility" and ev.state_key == "" and ev.room_id in self._visibility:
                vis = ev.content.get("history_visibility")
                self._visibility[ev.room_id].append((ev.stream_ordering or 0, vis if isinstance(vis, str) else "shared"))

    async def _serialize(self, events: list[Event], device_key: str, filt: Filter) -> list[dict]:
        redaction_ids = [e.internal["redacted_by"] for e in events if e.internal.get("redacted_by")]
        redactions = await self.hs.event_cache.get_many(redaction_ids) if redaction_ids else {}
        if filt.event_format == "federation":
            return [dict(prune_event_dict(e.pdu, e.room_version) if e.internal.get("redacted_by") else e.pdu,
                         event_id=e.event_id) for e in events]
        now = int(time.time() * 1000)
        if filt.event_fields:
            return [apply_event_fields(serialize_event(
                e, device_key, redactions.get(e.internal.get("redacted_by") or ""), now,
                include_room_id=False), filt.event_fields) for e in events]
        out: list = []
        for e in events:
            # Shared bytes unless this event needs a per-recipient form.
            fragment = None
            if not e.internal.get("redacted_by") and e.internal.get("txn_device") != device_key:
                fragment = client_fragment(e, now)
            out.append(fragment if fragment is not None else serialize_event(
                e, device_key, redactions.get(e.internal.get("redacted_by") or ""), now,
                include_room_id=False))
        return out

    async def _room_entry(self, plan: RoomPlan, user_id: str, since: StreamToken | None,
                          now: StreamToken, filt: Filter, device_key: str,
                          receipt_event: dict | None, room_account_data: list[dict]) -> dict | None:
        head = await self.hs.room_heads.get(plan.room_id)
        if head is None:
            return None
        timeline_ids = {e.event_id for e in plan.events}
        state_filter = filt.room.state
        if plan.kind == "leave" and (plan.full or plan.limited):
            state_ids = await self.hs.db.run(sync_store.state_at_stream, plan.room_id, plan.upto)
            found = await self.hs.event_cache.get_many(list(state_ids.values()))
            state_map = {k: found[v] for k, v in state_ids.items() if v in found}
        else:
            state_map = head.state
        if plan.full:
            state = [e for e in state_map.values() if e.event_id not in timeline_ids]
        elif plan.limited:
            first = plan.events[0].stream_ordering if plan.events else now.events + 1
            lower = since.events if since else 0
            state = [e for e in state_map.values()
                     if e.stream_ordering is not None and lower < e.stream_ordering < first]
        else:
            state = []
        if not state_filter.passes_all:
            state = [e for e in state if state_filter.allows(e.type, e.sender, e.content)]
        if state_filter.lazy_load_members:
            needed = {e.sender for e in plan.events} | {user_id}
            state = [e for e in state if e.type != "m.room.member" or e.state_key in needed]
            if plan.full or plan.limited:
                present = {e.state_key for e in state if e.type == "m.room.member"}
                state += [state_map[("m.room.member", u)] for u in needed - present
                          if ("m.room.member", u) in state_map
                          and state_map[("m.room.member", u)].event_id not in timeline_ids]
        ephemeral: list[dict] = []
        if plan.kind == "join":
            typing_since = since.typing if since and not plan.full else -1
            if plan.full or self.engine.typing.changed_since(plan.room_id, typing_since):
                users = self.engine.typing.typing_users(plan.room_id)
                if users or not plan.full:
                    ephemeral.append({"type": "m.typing", "content": {"user_ids": users}})
            if receipt_event:
                ephemeral.append(receipt_event)
            ephemeral = [e for e in ephemeral if filt.room.ephemeral.allows(e["type"], "")]
        account_data = [e for e in room_account_data if filt.room.account_data.allows(e["type"], user_id)]
        if not (plan.full or plan.events or state or ephemeral or account_data):
            return None
        if plan.events:
            first_ev = plan.events[0]
            prev_batch = topo_token((first_ev.depth, first_ev.stream_ordering or 0))
        else:
            prev_batch = f"s{plan.upto}"
        entry: dict[str, Any] = {
            "timeline": {"events": await self._serialize(plan.events, device_key, filt),
                         "limited": plan.limited, "prev_batch": prev_batch},
            "state": {"events": await self._serialize(state, device_key, filt)},
            "account_data": {"events": account_data},
        }
        if plan.kind == "join":
            entry["ephemeral"] = {"events": ephemeral}
            entry["unread_notifications"] = {"notification_count": 0, "highlight_count": 0}
            entry["summary"] = self._summary(head, user_id)
        return entry

    def _summary(self, head, user_id: str) -> dict[str, Any]:
        joined = [u for u, m in head.members.items() if m == "join"]
        invited = [u for u, m in head.members.items() if m == "invite"]
        summary: dict[str, Any] = {"m.joined_member_count": len(joined),
                                   "m.invited_member_count": len(invited)}
        if ("m.room.name", "") not in head.state and ("m.room.canonical_alias", "") not in head.state:
            summary["m.heroes"] = sorted(u for u in joined + invited if u != user_id)[:5]
        return summary

    async def _stripped_state(self, room_id: str, user_id: str) -> list[dict[str, Any]]:
        """What an invitee or a knocker sees of a room: a few state events, stripped."""
        head = await self.hs.room_heads.get(room_id)
        if head is not None and ("m.room.create", "") not in head.state and self.hs.federation is not None:
            # Known only through another server's invite: what that invite showed of the room.
            return await self.hs.federation.membership.invite_state(room_id, user_id)
        keys = [(t, "") for t in STRIPPED_STATE_TYPES] + [("m.room.member", user_id)]
        found = [head.state.get(key) for key in keys] if head is not None else []
        return [{"type": ev.type, "state_key": ev.state_key, "content": ev.content, "sender": ev.sender}
                for ev in found if ev is not None]

    async def _invite_entry(self, room_id: str, user_id: str) -> dict[str, Any]:
        head = await self.hs.room_heads.get(room_id)
        events = await self._stripped_state(room_id, user_id)
        if head is not None:
            invite = head.state.get(("m.room.member", user_id))
            if invite is not None:
                inviter = head.state.get(("m.room.member", invite.sender))
                if inviter is not None and inviter.sender != user_id:
                    events.append({"type": "m.room.member", "state_key": inviter.state_key,
                                   "content": inviter.content, "sender": inviter.sender})
        return {"invite_state": {"events": events}}

    def _no_longer_sharing(self, user_id: str, plans: list[RoomPlan], sharing: set[str]) -> set[str]:
        """Users who left (or were removed from, or saw us leave) a room in this sync's
        timelines and now share no room with us: E2EE clients stop tracking their keys."""
        candidates: set[str] = set()
        for plan in plans:
            for e in plan.events:
                if e.type == "m.room.member" and e.membership in ("leave", "ban"):
                    if e.state_key == user_id:
                        head = self.hs.room_heads.peek(plan.room_id)
                        candidates.update(head.joined_members() if head else ())
                    elif e.state_key:
                        candidates.add(e.state_key)
        return candidates - sharing

    async def _receipts(self, plans: list[RoomPlan], since: StreamToken | None, now: StreamToken,
                        user_id: str) -> dict[str, dict]:
        receipts = self.engine.receipts
        rooms = []
        for p in plans:
            if p.kind != "join":
                continue
            lower = 0 if p.full or since is None else since.receipts
            s = receipts.known_room_stream(p.room_id)
            if s is not None and s > lower:
                rooms.append((p.room_id, lower))
        if not rooms:
            return {}
        # Rooms share one lower bound per call: full rooms (0) and the rest (since).
        out: dict[str, dict] = {}
        for lower in sorted({lo for _, lo in rooms}):
            ids = [r for r, lo in rooms if lo == lower]
            out.update(await receipts.receipt_events(ids, lower, now.receipts, user_id))
        return out

    async def _account_data(self, user_id: str, since: StreamToken | None, now: StreamToken):
        ad = self.engine.account_data
        lower = since.account_data if since else 0
        if since is not None and await ad.user_stream(user_id) <= lower:
            return [], {}
        return await ad.changed_since(user_id, lower)

    def _presence(self, sharing: set[str], since: StreamToken | None, filt: Filter) -> list[dict]:
        if not self.hs.config.presence.enabled:
            return []
        presence = self.engine.presence
        changed = presence.changed_since(sharing, since.presence if since else 0)
        return [presence.event_for(u) for u in sorted(changed) if filt.presence.allows("m.presence", u)]

    async def _device_list_changes(self, since: StreamToken | None, now: StreamToken) -> set[str]:
        """Every user whose devices changed since `since` (the caller keeps those it shares
        a room with)."""
        if since is None:
            return set()
        return await self.engine.device_lists.changed_since(since.device_lists, now.device_lists)
