"""Building local events: prev_events from the forward extremities, auth events, depth,
content hash, signature and event id; then the auth rules against current state, and
hand-off to the persister. Everything between reading the room head and queueing the
event is synchronous, so events of one room are built strictly one after another.

Room versions 1 and 2 differ in format: the event id is `$random:server`, carried in
the PDU, and prev_events/auth_events cite [id, {"sha256": reference hash}] pairs, so
the cited events must be in memory when an event is built."""
from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet import defer

from homeserver import auth_rules
from homeserver.async_utils import Coalescer
from homeserver.canonical_alias import canonical_alias_check
from homeserver.canonical_json import CanonicalJsonError
from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.event import Event
from homeserver.event_hashing import (
    add_content_hash,
    compute_event_id,
    event_reference,
    sign_event,
)
from homeserver.ids import new_legacy_event_id
from homeserver.relations import row_extra
from homeserver.room_heads import RoomHead
from homeserver.room_versions import RoomVersion
from homeserver.tenancy import TENANT_KEY
from homeserver.writer_layout import RoomMoved
from storage import events as events_store
from storage.events import EventRow, NewStateGroup

if TYPE_CHECKING:
    from homeserver.server import HomeServer

MAX_PREV_EVENTS = 10
MAX_ID_TRIES = 1000  # a room id for this writer (with several); a writer leaving the layout finds none
ExtraCheck = Callable[[RoomHead, Event], None]


def now_ms() -> int:
    return int(time.time() * 1000)


def _text_column(value: Any) -> str | None:
    """A content string copied into a text column; PostgreSQL text cannot hold NUL."""
    return value if isinstance(value, str) and "\x00" not in value else None


class EventCreator:
    def __init__(self, hs: "HomeServer") -> None:
        self.hs = hs
        self._txns = Coalescer()

    # ---- public entry points ------------------------------------------------------

    async def send(self, room_id: str, sender: str, event_type: str, content: dict,
                   state_key: str | None = None, *, txn: tuple[str, str, str] | None = None,
                   extra_check: ExtraCheck | None = None, ts: int | None = None, hand_on: bool = True) -> Event:
        """Build, authorise and persist one event; returns once it is durably stored. With
        several writers, an event of another writer's room is handed to it, unless this
        call came from a writer (`hand_on` False: RoomMoved, the caller asks the owner)."""
        layout = self.hs.writer_layout
        if layout is None:
            return await self._send_here(room_id, sender, event_type, content, state_key, txn, extra_check, ts)
        # Several processes: the room's writer builds it, and may be handing it over.
        if self.hs.owns_room(room_id):
            try:
                async with layout.building(room_id):
                    return await self._send_here(room_id, sender, event_type, content, state_key, txn,
                                                 extra_check, ts)
            except RoomMoved as e:
                if extra_check is not None or not hand_on:
                    raise  # the request is tried again at the new owner (client_api/forwarding.py)
                await layout.until_generation(e.generation)  # refused by a layout not heard of yet
        if not hand_on:
            raise RoomMoved(layout.layout.generation)
        if extra_check is not None or self.hs.remote_writes is None:
            raise MatrixError(503, "M_UNKNOWN", "this process does not write to that room")
        return await self.hs.remote_writes.send(room_id, sender, event_type, content, state_key, txn, ts)

    async def _send_here(self, room_id, sender, event_type, content, state_key, txn, extra_check, ts) -> Event:
        if txn is not None:
            return await self._txns.run(txn, lambda: self._send_once(
                room_id, sender, event_type, content, state_key, txn, extra_check, ts))
        return await self._send_now(room_id, sender, event_type, content, state_key, None,
                                    extra_check, ts)

    async def _send_once(self, room_id, sender, event_type, content, state_key, txn,
                         extra_check, ts) -> Event:
        existing = await self.hs.db.run(events_store.get_txn_event, *txn)
        if existing is not None:
            ev = await self.hs.event_cache.get(existing)
            assert ev is not None
            return ev
        return await self._send_now(room_id, sender, event_type, content, state_key, txn,
                                    extra_check, ts)

    async def _send_now(self, room_id, sender, event_type, content, state_key, txn,
                        extra_check, ts) -> Event:
        async with self.hs.relations.sending(room_id, sender, event_type, content):
            return await self._send_checked(room_id, sender, event_type, content, state_key, txn,
                                            extra_check, ts)

    async def _send_checked(self, room_id, sender, event_type, content, state_key, txn,
                            extra_check, ts) -> Event:
        await self._head(room_id, sender)
        # Everything that needs Postgres happens first; the rest is synchronous.
        if event_type == "m.room.member" and isinstance(state_key, str):
            await self.hs.tenancy.tenant_of(state_key)  # for the tenant check in queue_event
        checks = [extra_check] if extra_check else []
        if event_type == "m.room.redaction":
            checks.append(await self._redaction_check(room_id, content))
        if event_type == "m.room.canonical_alias" and state_key == "":
            checks.append(await canonical_alias_check(self.hs, await self._head(room_id, sender), content))
        # Read the head again: a failed batch may have replaced it while we awaited.
        head = await self._head_with_prev_events(room_id, sender)
        d = self.queue_event(head, sender, event_type, content, state_key, txn=txn,
                             extra_check=_all_of(checks), ts=ts)
        return await d

    async def _head(self, room_id: str, sender: str) -> RoomHead:
        head = await self.hs.tenancy.head_for(sender, room_id)
        if head is None:  # missing, or another tenant's: the same answer
            raise not_found(f"unknown room {room_id}")
        return head

    async def _head_with_prev_events(self, room_id: str, sender: str) -> RoomHead:
        """The head, with (v1/v2) the extremity events in the cache so that their
        reference hashes can be cited. Events built here are cached as they are made,
        so this loads only after a restart or an eviction."""
        head = await self._head(room_id, sender)
        for _ in range(3):
            if head.room_version.event_ids_are_hashes:
                return head
            missing = [e for e in head.extremities[:MAX_PREV_EVENTS]
                       if self.hs.event_cache.peek(e) is None]
            if not missing:
                return head
            await self.hs.event_cache.get_many(missing)
            head = await self._head(room_id, sender)
        return head

    def _prev_references(self, head: RoomHead) -> list:
        prev_ids = head.extremities[:MAX_PREV_EVENTS]
        if head.room_version.event_ids_are_hashes:
            return prev_ids
        prev_events = [self.hs.event_cache.peek(e) for e in prev_ids]
        if any(ev is None for ev in prev_events):
            # Only if the cache evicted them between loading and building: ask to retry.
            raise MatrixError(503, "M_UNKNOWN", "the room's latest events are loading; retry")
        return [event_reference(ev) for ev in prev_events]

    async def _redaction_check(self, room_id: str, content: dict) -> ExtraCheck:
        """Whoever may send m.room.redaction (the auth rules' only test) may redact their
        own events; other people's need the redact power level, and only in this room."""
        redacts = content.get("redacts")
        if not isinstance(redacts, str) or not redacts.startswith("$") or "\x00" in redacts \
                or len(redacts.encode("utf-8")) > 255:
            raise MatrixError(400, "M_INVALID_PARAM", "redacts must be an event id")
        target = await self.hs.event_cache.get(redacts)
        if target is None or target.room_id != room_id:
            # 400 with Synapse's errcode (the spec names none): a request that cannot be
            # right. A missing event answers the same as another room's (which may be
            # another tenant's); without federation no event can still be on its way.
            raise MatrixError(400, "M_UNKNOWN", "the event to redact is not in this room")

        def may_redact(head: RoomHead, redaction: Event) -> None:
            if target.sender == redaction.sender:
                return
            level = auth_rules.get_user_power_level(redaction.sender, head.state)
            if level < auth_rules.get_named_level("redact", head.state):
                raise forbidden("you may not redact other users' events")

        return may_redact

    def queue_event(self, head: RoomHead, sender: str, event_type: str, content: dict,
                    state_key: str | None = None, *, txn: tuple[str, str, str] | None = None,
                    extra_check: ExtraCheck | None = None, ts: int | None = None) -> defer.Deferred:
        """Synchronously build, authorise and apply the event to the head; the Deferred
        fires when it is persisted. Callers may queue several and await them together."""
        if "\x00" in event_type or "\x00" in (state_key or ""):
            # They are text columns too: refuse here, not fail the whole persist batch.
            raise MatrixError(400, "M_INVALID_PARAM", "event type and state_key may not contain NUL")
        layout = self.hs.writer_layout
        if layout is not None and not (layout.is_writer and layout.may_build(head.room_id)):
            # Another writer builds this room's events (or will, once it is handed over).
            raise RoomMoved(layout.layout.generation)
        if event_type == "m.room.member" and isinstance(state_key, str):
            self.hs.tenancy.check_membership(head, state_key, content.get("membership"))
        rv = head.room_version
        event = self._finish(self.template(head, sender, event_type, content, state_key, ts), rv)
        try:
            auth_rules.check_auth(event, head.state)
        except auth_rules.AuthError as e:
            raise forbidden(str(e)) from None
        if extra_check is not None:
            extra_check(head, event)
        row = self._apply(head, event, txn)
        return self.hs.persister.enqueue(row, event)

    def template(self, head: RoomHead, sender: str, event_type: str, content: dict,
                 state_key: str | None = None, ts: int | None = None) -> dict[str, Any]:
        """The unsigned PDU of an event on top of the head: prev events, depth, auth events.
        Also what make_join/make_leave/make_knock hand to another server."""
        pdu: dict[str, Any] = {
            "room_id": head.room_id, "sender": sender, "type": event_type,
            "content": content, "origin_server_ts": ts or now_ms(),
            "depth": head.depth + 1, "prev_events": self._prev_references(head),
        }
        if state_key is not None:
            pdu["state_key"] = state_key
        if event_type == "m.room.redaction" and not head.room_version.redacts_in_content:
            pdu["redacts"] = content.get("redacts")
        auth_keys = auth_rules.auth_types_for_event(event_type, sender, state_key, content, head.room_version)
        pdu["auth_events"] = [event_reference(head.state[k]) for k in auth_keys if k in head.state]
        return pdu

    def queue_create_event(self, sender: str, rv: RoomVersion, content: dict,
                           room_id: str | None) -> tuple[RoomHead, defer.Deferred]:
        """The first event of a new room; in v12 the room id is derived from it."""
        pdu: dict[str, Any] = {
            "sender": sender, "type": "m.room.create", "state_key": "", "content": content,
            "origin_server_ts": now_ms(), "depth": 1, "prev_events": [], "auth_events": [],
        }
        if not rv.room_id_from_create:
            assert room_id is not None
            pdu["room_id"] = room_id
        if not self.hs.writes_rooms:
            raise MatrixError(503, "M_UNKNOWN", "this process does not create rooms")
        event = self._finish(pdu, rv)
        layout = self.hs.writer_layout
        if layout is not None:
            # Several writers: a room id (here the create event's hash) that lands on this
            # one; a few tries, as many as there are writers on average.
            for _ in range(MAX_ID_TRIES):
                if layout.may_create(event.room_id):
                    break
                pdu["origin_server_ts"] += 1
                event = self._finish(pdu, rv)
            else:
                raise RoomMoved(layout.layout.generation, "no room id lands on this writer now; retry")
        head = RoomHead(room_id=event.room_id, room_version=rv, state={}, extremities=[],
                        depth=0, state_group=0, chain_length=0)
        try:
            auth_rules.check_auth(event, {event.key: event})
        except auth_rules.AuthError as e:
            raise forbidden(str(e)) from None
        if self.hs.room_heads.peek(head.room_id) is not None:
            raise MatrixError(400, "M_ROOM_IN_USE", "room id already exists")
        self.hs.room_heads.add(head)
        row = self._apply(head, event, None)
        tenant = content.get(TENANT_KEY)
        row.new_room = (rv.identifier, sender, tenant if isinstance(tenant, str) else None)
        return head, self.hs.persister.enqueue(row, event)

    # ---- internals ----------------------------------------------------------------

    def build(self, pdu: dict[str, Any], rv: RoomVersion) -> Event:
        """Hash, sign and name a PDU without authorising or queueing it (federation
        handshakes: the event goes to another server first)."""
        return self._finish(pdu, rv)

    def _finish(self, pdu: dict[str, Any], rv: RoomVersion) -> Event:
        if not rv.event_ids_are_hashes:
            pdu["event_id"] = new_legacy_event_id(self.hs.server_name)  # hashed and signed too
        try:
            add_content_hash(pdu)
            sign_event(pdu, rv, self.hs.server_name, self.hs.signing_key)
            event_id = compute_event_id(pdu, rv)
            auth_rules.check_pdu_limits(pdu, rv)
        except (CanonicalJsonError, UnicodeEncodeError) as e:
            raise MatrixError(400, "M_BAD_JSON", f"event content is not canonical JSON: {e}") from None
        except auth_rules.AuthError as e:
            raise MatrixError(413, "M_TOO_LARGE", str(e)) from None
        return Event(event_id, rv, pdu)

    def _apply(self, head: RoomHead, event: Event, txn) -> EventRow:
        """Advance the in-memory head past `event` and describe the rows to write."""
        new_group = None
        unsigned = None
        if event.is_state():
            previous = head.state.get(event.key)
            if previous is not None:
                unsigned = {"replaces_state": previous.event_id, "prev_content": previous.content,
                            "prev_sender": previous.sender}
            group_id = self.hs.persister.allocate_state_group()
            if head.state_group == 0 or head.chain_length + 1 >= self.hs.config.rooms.max_state_delta_chain:
                entries = {k: e.event_id for k, e in head.state.items()}
                entries[event.key] = event.event_id
                new_group = NewStateGroup(group_id, None, 0, entries)
            else:
                new_group = NewStateGroup(group_id, head.state_group, head.chain_length + 1,
                                          {event.key: event.event_id})
            head.apply_state(event)
            head.state_group = group_id
            head.chain_length = new_group.chain_length
        # The event cites up to MAX_PREV_EVENTS extremities; any beyond stay (federation forks).
        head.extremities = [event.event_id, *head.extremities[MAX_PREV_EVENTS:]]
        head.depth = event.depth
        head.version += 1
        if unsigned:
            event.internal["unsigned"] = unsigned
        if txn:
            event.internal["txn_device"] = f"{txn[0]}|{txn[1]}"
            event.internal["txn_id"] = txn[2]
        event.internal["redacted_by"] = None
        self.hs.event_cache.put(event)
        return event_row(event, head.state_group, new_group, unsigned, txn=txn)


def event_row(event: Event, state_group: int, new_group: NewStateGroup | None, unsigned: dict | None,
              *, txn: tuple[str, str, str] | None = None, apply_redaction: bool | None = None) -> EventRow:
    """The rows to write for `event` (local, or received over federation)."""
    content = event.content
    return EventRow(
        event_id=event.event_id, room_id=event.room_id, type=event.type,
        state_key=event.state_key, sender=event.sender, depth=event.depth,
        origin_server_ts=event.origin_server_ts, received_ts=now_ms(),
        json=json.dumps(event.pdu, ensure_ascii=False), prev_events=event.prev_event_ids,
        auth_events=event.auth_event_ids, state_group=state_group,
        new_state_group=new_group, redacts=event.redacts,
        apply_redaction=event.redacts is not None if apply_redaction is None else apply_redaction,
        unsigned_json=json.dumps(unsigned) if unsigned else None,
        membership=event.membership,
        member_displayname=_text_column(content.get("displayname")) if event.membership else None,
        member_avatar_url=_text_column(content.get("avatar_url")) if event.membership else None,
        txn=txn, extra=row_extra(content),
    )


def _all_of(checks: list[ExtraCheck]) -> ExtraCheck | None:
    if not checks:
        return None

    def run(head: RoomHead, event: Event) -> None:
        for check in checks:
            check(head, event)
    return run
