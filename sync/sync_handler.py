"""GET /sync: initial and incremental, long-polling through the notifier.

Work is bounded: an idle incremental sync reads only memory (room stream positions,
ephemeral streams, account-data and to-device positions); a sync with news reads the
changed rooms' timelines in one statement (or from the in-memory timeline cache), and
history-visibility data in two more when rooms are sent in full.

A woken long-poll costs in proportion to what changed, not to the size of the user's
world: the rooms to look at come from the change logs (events, typing, receipts) after
the token, presence and device-list changes are checked against the few users who
changed (`SyncEngine.shares_room`), and a room's summary is computed once per state
change, not once per member."""
from __future__ import annotations

import heapq
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
from sync.stream_followers import reach_token
from sync.tokens import StreamToken

if TYPE_CHECKING:
    from homeserver.server import HomeServer
    from sync.engine import SyncEngine

DEFAULT_TIMELINE_LIMIT = 10
MAX_TIMELINE_LIMIT = 500
STRIPPED_STATE_TYPES = ("m.room.create", "m.room.join_rules", "m.room.name", "m.room.avatar",
                        "m.room.canonical_alias", "m.room.encryption", "m.room.topic")
MEMBER = "m.room.member"
_NO_FILTER = Filter()


def _stream(ev: Event) -> float:
    # An event applied to a room head but not yet persisted has no position yet: newest.
    return ev.stream_ordering if ev.stream_ordering is not None else float("inf")


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
        # room -> (state group, joined count, invited count, first six heroes, named)
        self._summaries: dict[str, tuple[int, int, int, list[str], bool]] = {}

    async def sync(self, user_id: str, device_id: str, since_token: str | None, timeout_ms: int,
                   full_state: bool, filt: Filter, set_presence: str | None) -> dict[str, Any]:
        since = StreamToken.parse(since_token) if since_token else None
        if since is not None and self.hs.replication is not None:
            await reach_token(self.hs, since)  # a token another sync process handed out
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
                    while must_wait or not await self.has_news(user_id, device_id, check_from):
                        remaining_ms = int((deadline - time.monotonic()) * 1000)
                        if remaining_ms <= 0 or self.engine.notifier.closing:  # closing: answer now
                            break
                        must_wait = False
                        if await self.engine.notifier.wait(user_id, remaining_ms):
                            break  # woken for something of ours: the build tells if it passes the filter
                result, has_news = await self._build(user_id, device_id, since, full_state, filt)
                if has_news or since is None or full_state or time.monotonic() >= deadline \
                        or self.engine.notifier.closing:
                    return result
                # What woke us was filtered out: wait for the next wake-up (never spin)
                # and then for anything newer than this.
                check_from = StreamToken.parse(result["next_batch"])
                must_wait = True
        finally:
            if presence_on:
                self.engine.presence.sync_finished(user_id)

    async def has_news(self, user_id: str, device_id: str, since: StreamToken) -> bool:
        """Whether anything for this device happened after `since`: a membership change,
        events and ephemeral updates of its joined rooms, account data, to-device
        messages, device lists and presence of users it shares a room with.
        From its last await on it does not yield, so a caller that waits on the notifier
        right after a False misses no wake-up."""
        engine = self.engine
        rooms = await engine.user_rooms.rooms_of(user_id)
        ad_stream = await engine.account_data.user_stream(user_id)
        td_stream = await engine.to_device.pending_stream(user_id, device_id)
        # From here on nothing awaits, so no wake-up can slip between check and wait.
        if ad_stream > since.account_data or td_stream > since.to_device:
            return True
        room_stream = engine.user_rooms.room_stream
        changed = self._changed_rooms(rooms, since)
        for room_id in rooms if changed is None else changed:
            membership, m_stream = rooms[room_id]
            if m_stream > since.events:
                return True
            # Later events of a room one was invited to or has left are not news.
            if membership == "join" and (room_stream.get(room_id, 0) > since.events
                                         or self._ephemeral_changed(room_id, since)):
                return True
        device_changes = engine.device_lists.changed_in_memory(since.device_lists)
        if device_changes and (any(engine.shares_room(user_id, u) for u in device_changes)
                               or engine.unloaded_rooms(user_id)):  # can't tell here: the build can
            return True
        if self.hs.config.presence.enabled:
            presence = engine.presence
            changed_users = presence.changed_after(since.presence)
            if changed_users is None:  # too old for the log: walk everyone we share with
                return bool(presence.changed_since(engine.sharing_users(user_id), since.presence)) \
                    or bool(engine.unloaded_rooms(user_id))
            return any(engine.shares_room(user_id, u) for u in changed_users) \
                or bool(changed_users and engine.unloaded_rooms(user_id))  # can't tell here: the build can
        return False

    def _changed_rooms(self, rooms: dict[str, tuple[str, int]], since: StreamToken | None) -> set[str] | None:
        """The user's rooms with events, typing or receipts after `since`, from the change
        logs; None when the logs cannot tell (a token older than they reach, or from an
        earlier process) or when walking every room is cheaper."""
        if since is None:
            return None
        engine = self.engine
        if since.typing > engine.typing.stream.current:
            return None  # typing positions restarted with the process
        budget = 4 * len(rooms) + 64
        event_rooms = engine.room_log.keys_after(since.events, budget)
        typing_rooms = engine.typing.log.keys_after(since.typing, budget)
        receipt_rooms = engine.receipts.log.keys_after(since.receipts, budget)
        if event_rooms is None or typing_rooms is None or receipt_rooms is None:
            return None
        return {r for keys in (event_rooms, typing_rooms, receipt_rooms) for r in keys if r in rooms}

    # ---- building one response ----------------------------------------------------

    async def _build(self, user_id: str, device_id: str, since: StreamToken | None,
                     full_state: bool, filt: Filter) -> tuple[dict[str, Any], bool]:
        engine = self.engine
        now = engine.current_token()
        rooms = await engine.user_rooms.rooms_of(user_id)
        await self.hs.push.counts.ensure_loaded(user_id)  # memory after the first sync
        ignored = await engine.account_data.ignored_users(user_id)
        global_ad, room_ad = await self._account_data(user_id, since, now)
        changed = None if full_state else self._changed_rooms(rooms, since)
        if changed is None:  # every room is looked at: know each one's receipt position
            await self.remember_receipt_streams(list(rooms))
        timeline_filter = filt.room.timeline
        limit = min(timeline_filter.limit if timeline_filter.limit is not None else DEFAULT_TIMELINE_LIMIT,
                    MAX_TIMELINE_LIMIT)
        plans = self.plan_rooms(user_id, rooms, changed, room_ad, since, now, full_state, filt)
        if changed is not None:
            await self.remember_receipt_streams([p.room_id for p in plans if p.full])
        await self._complete_left_rooms(user_id, plans, since)
        await self.load_timelines(user_id, plans, limit, timeline_filter, since, ignored)

        device_key = f"{user_id}|{device_id}"
        join: dict[str, Any] = {}
        invite: dict[str, Any] = {}
        knock: dict[str, Any] = {}
        leave: dict[str, Any] = {}
        receipts = await self._receipts(plans, since, now, user_id)
        for plan in plans:
            if plan.kind == "invite":
                entry = await self._invite_entry(plan.room_id, user_id, ignored)
                if entry is not None:
                    invite[plan.room_id] = entry
                continue
            if plan.kind == "knock":
                knock_state = await self._stripped_state(plan.room_id, user_id)
                knock[plan.room_id] = {"knock_state": {"events": knock_state}}
                continue
            entry = await self._room_entry(plan, user_id, device_id, since, now, filt, device_key,
                                           receipts.get(plan.room_id), room_ad.get(plan.room_id, []))
            if entry is None:
                continue
            (join if plan.kind == "join" else leave)[plan.room_id] = entry

        to_device, to_device_pos = await engine.to_device.fetch(
            user_id, device_id, since.to_device if since else 0)
        device_changes = await self._device_list_changes(since, now)
        if device_changes:
            device_changes = await engine.sharing_among(user_id, device_changes)
        presence_events = await self._presence(user_id, since, filt, plans)
        left = self._no_longer_sharing(user_id, plans) if since else set()
        if device_changes or left or presence_events:
            # Someone whose tenant changed after joining may still share a room: another
            # tenant's users are never mentioned (tenants are cached: no query once known).
            visible = await self.hs.tenancy.visible_users(
                user_id, device_changes | left | {e["sender"] for e in presence_events})
            device_changes &= visible
            left &= visible
            presence_events = [e for e in presence_events if e["sender"] in visible]
        next_token = now if to_device_pos == now.to_device else now.copy_with(to_device=to_device_pos)
        result: dict[str, Any] = {
            "next_batch": next_token.encode(),
            "rooms": {"join": join, "invite": invite, "leave": leave, "knock": knock},
            "account_data": {"events": [e for e in global_ad if filt.account_data.allows(e["type"], user_id)]},
            "presence": {"events": presence_events},
            "to_device": {"events": to_device},
            "device_lists": {"changed": sorted(device_changes),
                             "left": sorted(left)},
        }
        if device_id:
            otk_counts, fallback_types = await engine.e2e_counts.get(user_id, device_id)
            result["device_one_time_keys_count"] = otk_counts
            result["device_unused_fallback_key_types"] = fallback_types
        has_news = bool(join or invite or knock or leave or global_ad or presence_events or to_device
                        or device_changes)
        return result, has_news

    def plan_rooms(self, user_id: str, rooms: dict[str, tuple[str, int]], changed: set[str] | None,
                    room_ad: dict[str, list[dict]], since: StreamToken | None, now: StreamToken,
                    full_state: bool, filt: Filter) -> list[RoomPlan]:
        """Which of the user's `rooms` (room id -> (membership, its stream position)) a
        sync from `since` (None: an initial sync) up to `now` sends, and how: in full or
        from `since`, as join, invite, knock or leave. `changed`: the only rooms that can
        have news (None: look at every room); rooms with new room account data
        (`room_ad`) are looked at too."""
        plans = []
        forgotten = self.engine.user_rooms.forgotten(user_id)
        room_stream = self.engine.user_rooms.room_stream
        candidates = rooms if changed is None else \
            [r for r in changed.union(room_ad) if r in rooms]
        for room_id in candidates:
            membership, m_stream = rooms[room_id]
            if not filt.room.allows_room(room_id) or m_stream > now.events:
                continue
            if membership == "join":
                if since is None or m_stream > since.events:
                    plans.append(RoomPlan(room_id, "join", True, 0, now.events, True, m_stream))
                elif full_state:  # every room with its full state, the timeline still from `since`
                    plans.append(RoomPlan(room_id, "join", True, since.events, now.events, False, m_stream))
                elif room_stream.get(room_id, 0) > since.events or self._ephemeral_changed(room_id, since) \
                        or room_id in room_ad:  # room account data alone brings the room too
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

    async def _complete_left_rooms(self, user_id: str, plans: list[RoomPlan], since: StreamToken | None) -> None:
        """A room joined and left since the token is new to the client: send it in full
        (state and timeline up to the leave). A room the client knew is sent as usual."""
        left = [p for p in plans if p.kind == "leave" and since is not None and not p.full]
        if not left:
            return
        histories = await self.hs.db.run(sync_store.membership_histories, user_id, [p.room_id for p in left])
        for plan in left:
            hist = visibility.UserRoomHistory(histories.get(plan.room_id, []), [], user_id)
            joined_since = any(m == "join" and since.events < so <= plan.upto for so, m in hist.memberships)
            if joined_since and hist.membership_at(since.events) != "join":
                plan.full, plan.after = True, 0

    def _ephemeral_changed(self, room_id: str, since: StreamToken) -> bool:
        if self.engine.typing.changed_since(room_id, since.typing):
            return True
        s = self.engine.receipts.known_room_stream(room_id)
        return s is not None and s > since.receipts

    async def remember_receipt_streams(self, room_ids: list[str]) -> None:
        """Load, once per room, the latest receipt stream position of rooms whose receipts
        the engine has not seen yet, so later syncs can tell unchanged rooms in memory."""
        receipts = self.engine.receipts
        unknown = [r for r in room_ids if receipts.known_room_stream(r) is None and r not in self._receipts_loaded]
        if unknown:
            from storage import receipts as receipts_store
            receipts.remember_room_streams(await self.hs.db.run(receipts_store.latest_per_room, unknown))
            self._receipts_loaded.update(unknown)

    def _timeline_keep(self, user_id: str, plan: RoomPlan, since: StreamToken | None, tf: EventFilter,
                       ignored: frozenset[str]):
        """The predicate a timeline event must pass (None: every event does): the filter,
        and the ignored users. Their state events are kept (so the room looks the same);
        an incremental sync also drops what was sent while its sender was ignored, even if
        the list has changed since (the spec: those are not sent later)."""
        ad = self.engine.account_data
        history = not plan.full and since is not None and ad.ever_ignored_since(user_id, plan.after)
        if not ignored and not history:
            return None if tf.passes_all else (lambda e: tf.allows(e.type, e.sender, e.content))

        def keep(e: Event) -> bool:
            if not tf.passes_all and not tf.allows(e.type, e.sender, e.content):
                return False
            if e.state_key is not None:
                return True
            if e.sender in ignored:
                return False
            return not (history and e.sender in ad.ignored_at(user_id, e.stream_ordering or 0))
        return keep

    async def load_timelines(self, user_id: str, plans: list[RoomPlan], limit: int,
                              tf: EventFilter, since: StreamToken | None = None,
                              ignored: frozenset[str] = frozenset()) -> None:
        """Fill in each plan's timeline (`events`, `limited`): at most `limit` events the
        filter `tf` keeps and `ignored` senders did not send, from the recent-timeline
        cache where it holds them, else from PostgreSQL in one query for all the rest."""
        need_db = []
        cache = self.engine.timeline_cache
        keeps: dict[str, Any] = {}
        for plan in plans:
            if plan.kind in ("invite", "knock"):
                continue
            keep = keeps[plan.room_id] = self._timeline_keep(user_id, plan, since, tf, ignored)
            cached = cache.tail(plan.room_id, plan.after, plan.upto, limit, keep)
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
                keep = keeps[plan.room_id]
                events = [e for e in events if keep is None or keep(e)]
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
        # A room new to the client in an incremental sync (a new join, a room joined and
        # left) is `limited` unless its timeline starts at m.room.create: the client has
        # none of the history before it and must paginate back from prev_batch.
        if since is not None:
            for plan in plans:
                if plan.full and plan.after == 0 and plan.kind in ("join", "leave"):
                    plan.limited = not (plan.events and plan.events[0].type == "m.room.create")

    def on_events(self, events: list[Event]) -> None:
        """Keep the cached history-visibility changes of known rooms current."""
        for ev in events:
            if ev.type == "m.room.history_visibility" and ev.state_key == "" and ev.room_id in self._visibility:
                vis = ev.content.get("history_visibility")
                self._visibility[ev.room_id].append((ev.stream_ordering or 0, vis if isinstance(vis, str) else "shared"))

    async def _serialize(self, events: list[Event], device_key: str, filt: Filter,
                         bundle_for: str | None = None) -> list[dict]:
        """`bundle_for`: the user to bundle aggregations for (limited or new timelines
        only, as Synapse does: otherwise the client has seen every child already; and
        joined rooms only: a left room's bundles could show what came after the leave)."""
        if not events:
            return []
        redaction_ids = [e.internal["redacted_by"] for e in events if e.internal.get("redacted_by")]
        redactions = await self.hs.event_cache.get_many(redaction_ids) if redaction_ids else {}
        if filt.event_format == "federation":
            return [dict(prune_event_dict(e.pdu, e.room_version) if e.internal.get("redacted_by") else e.pdu,
                         event_id=e.event_id) for e in events]
        bundles = await self.hs.aggregations.bundle(events, bundle_for) if bundle_for else {}
        now = int(time.time() * 1000)
        if filt.event_fields:
            return [apply_event_fields(serialize_event(
                e, device_key, redactions.get(e.internal.get("redacted_by") or ""), now,
                include_room_id=False, relations=b.value if (b := bundles.get(e.event_id)) else None),
                filt.event_fields) for e in events]
        out: list = []
        for e in events:
            # Shared bytes unless this event needs a per-recipient form.
            fragment = None
            bundle = bundles.get(e.event_id)
            if not e.internal.get("redacted_by") and e.internal.get("txn_device") != device_key \
                    and (bundle is None or bundle.json is not None):
                fragment = client_fragment(e, now, bundle.json if bundle else None)
            out.append(fragment if fragment is not None else serialize_event(
                e, device_key, redactions.get(e.internal.get("redacted_by") or ""), now,
                include_room_id=False, relations=bundle.value if bundle else None))
        return out

    async def _room_entry(self, plan: RoomPlan, user_id: str, device_id: str, since: StreamToken | None,
                          now: StreamToken, filt: Filter, device_key: str,
                          receipt_event: dict | None, room_account_data: list[dict]) -> dict | None:
        head = await self.hs.room_heads.get(plan.room_id)
        if head is None:
            return None
        timeline_ids = {e.event_id for e in plan.events}
        state_filter = filt.room.state
        lazy = state_filter.lazy_load_members
        if plan.kind == "leave" and (plan.full or plan.limited):
            state_ids = await self.hs.db.run(sync_store.state_at_stream, plan.room_id, plan.upto)
            found = await self.hs.event_cache.get_many(list(state_ids.values()))
            state_map = {k: found[v] for k, v in state_ids.items() if v in found}
        else:
            state_map = head.state
        first = plan.events[0].stream_ordering or 0 if plan.events else now.events + 1
        if plan.full:
            state = [e for e in state_map.values() if e.event_id not in timeline_ids
                     and not (lazy and e.type == MEMBER)]
        elif plan.limited:
            lower = since.events if since else 0
            state = [e for e in state_map.values() if e.stream_ordering is not None
                     and lower < e.stream_ordering < first and not (lazy and e.type == MEMBER)]
        else:
            state = []
        if not state_filter.passes_all:
            state = [e for e in state if state_filter.allows(e.type, e.sender, e.content)]
        if lazy:
            state += await self._lazy_members(plan, user_id, device_id, since, now, state_map, first,
                                              state_filter, timeline_ids)
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
        counts_reset = plan.kind == "join" and since is not None and \
            self.hs.push.counts.reset_since(user_id, plan.room_id, since.receipts)
        if not (plan.full or plan.events or state or ephemeral or account_data or counts_reset):
            return None
        if plan.events:
            first_ev = plan.events[0]
            prev_batch = topo_token((first_ev.depth, first_ev.stream_ordering or 0))
        else:
            prev_batch = f"s{plan.upto}"
        entry: dict[str, Any] = {
            "timeline": {"events": await self._serialize(
                plan.events, device_key, filt,
                user_id if plan.kind == "join" and (plan.limited or plan.full) else None),
                         "limited": plan.limited, "prev_batch": prev_batch},
            "state": {"events": await self._serialize(state, device_key, filt)},
            "account_data": {"events": account_data},
        }
        if plan.kind == "join":
            entry["ephemeral"] = {"events": ephemeral}
            unread, by_thread = self.hs.push.counts.for_sync(
                user_id, plan.room_id, filt.room.timeline.unread_thread_notifications)
            entry["unread_notifications"] = unread
            if by_thread is not None:
                entry["unread_thread_notifications"] = by_thread
            entry["summary"] = self._summary(head, user_id)
        return entry

    async def _lazy_members(self, plan: RoomPlan, user_id: str, device_id: str, since: StreamToken | None,
                            now: StreamToken, state_map: dict, first: int, state_filter: EventFilter,
                            timeline_ids: set[str]) -> list[Event]:
        """The member events, as they stood where the timeline starts, of the timeline's
        senders (and in an initial, full or gappy sync, the user's own), less those this
        device already has (unless include_redundant_members). Recorded as sent."""
        needed = {e.sender for e in plan.events}
        if plan.full or plan.limited:
            needed.add(user_id)
        sent = self.engine.sent_members
        skip_redundant = since is not None and not plan.full and not state_filter.include_redundant_members
        out: list[Event] = []
        for member in needed:
            ev = await self._state_before(state_map.get((MEMBER, member)), first)
            if ev is None or ev.event_id in timeline_ids:
                continue
            if not state_filter.passes_all and not state_filter.allows(ev.type, ev.sender, ev.content):
                continue
            if skip_redundant and sent.already_sent(user_id, device_id, plan.room_id, member, ev.event_id,
                                                    since.events):  # type: ignore[union-attr]
                continue
            out.append(ev)
        for ev in out:
            sent.record(user_id, device_id, plan.room_id, ev.state_key, ev.event_id, now.events)
        for ev in plan.events:  # the timeline's own member events reach the device too
            if ev.type == MEMBER and ev.state_key:
                sent.record(user_id, device_id, plan.room_id, ev.state_key, ev.event_id, now.events)
        return out

    async def _state_before(self, ev: Event | None, position: int) -> Event | None:
        """The state event for `ev`'s key as it stood before stream `position`, following
        each event's replaced state back (rooms are linear here; rarely more than a step)."""
        while ev is not None and _stream(ev) >= position:
            previous = (ev.internal.get("unsigned") or {}).get("replaces_state")
            ev = await self.hs.event_cache.get(previous) if previous else None
        return ev

    def _summary(self, head, user_id: str) -> dict[str, Any]:
        # Counted once per state change of the room, not once per member woken by a message.
        cached = self._summaries.get(head.room_id)
        if cached is None or cached[0] != head.state_group:
            joined = [u for u, m in head.members.items() if m == "join"]
            invited = [u for u, m in head.members.items() if m == "invite"]
            named = ("m.room.name", "") in head.state or ("m.room.canonical_alias", "") in head.state
            cached = (head.state_group, len(joined), len(invited), heapq.nsmallest(6, joined + invited), named)
            self._summaries[head.room_id] = cached
        _, joined_count, invited_count, first_six, named = cached
        summary: dict[str, Any] = {"m.joined_member_count": joined_count,
                                   "m.invited_member_count": invited_count}
        if not named:
            summary["m.heroes"] = [u for u in first_six if u != user_id][:5]
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

    async def _invite_entry(self, room_id: str, user_id: str,
                            ignored: frozenset[str] = frozenset()) -> dict[str, Any] | None:
        """None for an invite from an ignored user (the spec: not sent to the client)."""
        head = await self.hs.room_heads.get(room_id)
        events = await self._stripped_state(room_id, user_id)
        if head is not None:
            invite = head.state.get(("m.room.member", user_id))
            if invite is not None and invite.sender in ignored:
                return None
            if invite is not None:
                inviter = head.state.get(("m.room.member", invite.sender))
                if inviter is not None and inviter.sender != user_id:
                    events.append({"type": "m.room.member", "state_key": inviter.state_key,
                                   "content": inviter.content, "sender": inviter.sender})
        return {"invite_state": {"events": events}}

    # ---- public hooks for sliding sync (sync/sliding_sync.py) -------------------------

    async def serialize(self, events: list[Event], device_key: str, bundle_for: str | None) -> list:
        return await self._serialize(events, device_key, _NO_FILTER, bundle_for)

    def room_summary(self, head, user_id: str) -> dict[str, Any]:
        """/sync's room summary: member counts, and heroes when the room has no name."""
        return self._summary(head, user_id)

    async def stripped_state(self, room_id: str, user_id: str, membership: str,
                             ignored: frozenset[str]) -> list[dict] | None:
        """An invitee's or knocker's view of a room; None for an invite from an ignored user."""
        if membership == "knock":
            return await self._stripped_state(room_id, user_id)
        entry = await self._invite_entry(room_id, user_id, ignored)
        return None if entry is None else entry["invite_state"]["events"]

    def _no_longer_sharing(self, user_id: str, plans: list[RoomPlan]) -> set[str]:
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
        return {u for u in candidates if not self.engine.shares_room(user_id, u)}

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

    async def _presence(self, user_id: str, since: StreamToken | None, filt: Filter,
                        plans: list[RoomPlan]) -> list[dict]:
        """Presence changes of users we share a room with, and the current presence of
        users who newly share one with us (members of a newly joined room, members who
        joined one of ours), whenever it last changed."""
        if not self.hs.config.presence.enabled or not filt.presence.allows_type("m.presence"):
            return []
        engine = self.engine
        presence = engine.presence
        changed_users = presence.changed_after(since.presence) if since is not None else None
        if changed_users is None:
            await engine.load_heads(user_id)
            changed = set(presence.changed_since(engine.sharing_users(user_id), since.presence if since else 0))
        else:
            changed = await engine.sharing_among(user_id, set(changed_users)) if changed_users else set()
        if since is not None:
            changed.update(u for u in self._newly_sharing(user_id, plans) if presence.is_known_online(u))
        return [presence.event_for(u) for u in sorted(changed) if filt.presence.allows("m.presence", u)]

    def _newly_sharing(self, user_id: str, plans: list[RoomPlan]) -> set[str]:
        users: set[str] = set()
        for plan in plans:
            if plan.kind != "join":
                continue
            if plan.full and plan.after == 0:  # newly joined: everyone in it
                head = self.hs.room_heads.peek(plan.room_id)
                users.update(head.joined_members() if head else ())
                continue
            for e in plan.events:
                if e.type == MEMBER and e.membership == "join" and e.state_key != user_id \
                        and (e.internal.get("unsigned") or {}).get("prev_content", {}).get("membership") != "join":
                    users.add(e.state_key)
        users.discard(user_id)
        return users

    async def _device_list_changes(self, since: StreamToken | None, now: StreamToken) -> set[str]:
        """Every user whose devices changed since `since` (the caller keeps those it shares
        a room with)."""
        if since is None:
            return set()
        return await self.engine.device_lists.changed_since(since.device_lists, now.device_lists)
