"""Sending and reading room events: send, state, event, messages, context, redact."""
from __future__ import annotations

from typing import Any, Protocol

from client_api.http import Req, Router, parse_json_body
from homeserver.filtering import EventFilter
from homeserver import visibility
from homeserver.errors import MatrixError, not_found
from homeserver.event import Event
from homeserver.pagination import END, START, Position, parse_token, topo_token
from homeserver.serialize import serialize_event
from storage import events as events_store
from storage import state as state_store

MAX_LIMIT = 1000


class SeesEvents(Protocol):
    """The asker's history visibility: a room's (visibility.UserRoomHistory), or that of
    each room of a search's results (search.Page)."""

    def may_see(self, event: Event) -> bool: ...


async def serialize_for(req: Req, events: list[Event],
                        hist: SeesEvents | None = None) -> list[dict[str, Any]]:
    """Client format, with the redacted form (and redacted_because) where redacted, and
    the bundled aggregations (unsigned.m.relations) where there are any, less what `hist`
    (the asker's history) hides. Every endpoint serving room events goes through here."""
    redaction_ids = [e.internal["redacted_by"] for e in events if e.internal.get("redacted_by")]
    redactions = await req.hs.event_cache.get_many(redaction_ids) if redaction_ids else {}
    bundles = await req.hs.aggregations.bundle(events, req.requester.user_id if req.requester else None,
                                               hist.may_see if hist is not None else None)
    device = req.requester.device_key if req.requester else None
    return [serialize_event(e, device, redactions.get(e.internal.get("redacted_by") or ""),
                            relations=b.value if (b := bundles.get(e.event_id)) else None)
            for e in events]


async def _not_ignored(req: Req):
    """A predicate keeping events whose sender the asker does not ignore (their state
    events are always kept), per m.ignored_user_list."""
    ignored = await req.hs.sync.account_data.ignored_users(req.user_id)
    return lambda e: not ignored or e.state_key is not None or e.sender not in ignored


def _txn(req: Req, txn_id: str) -> tuple[str, str, str]:
    check_txn_id(txn_id)
    return (req.user_id, req.requester.device_id, txn_id)


def check_txn_id(txn_id: str) -> None:
    if not txn_id or len(txn_id.encode("utf-8")) > 255 or "\x00" in txn_id:
        raise MatrixError(400, "M_INVALID_PARAM", "transaction ids are 1-255 bytes without NUL")


def _appservice_ts(req: Req) -> int | None:
    """Application services may set origin_server_ts with `ts` (bridged history)."""
    ts = req.query("ts")
    if ts is None or req.requester.app_service is None:
        return None
    value = req.query_int("ts")
    if value is None or not 0 <= value < 2**53:
        raise MatrixError(400, "M_INVALID_PARAM", "ts must be a timestamp in milliseconds")
    return value


async def _message_limit(req: Req, **_params: str) -> None:
    """Sends, redactions and state other than memberships (which have their own limits)."""
    await req.hs.ratelimiter.check_user(req, "rc_message", req.hs.config.rc_message)


async def send_event(req: Req, room_id: str, event_type: str, txn_id: str):
    content = req.json()
    ev = await req.hs.event_creator.send(room_id, req.user_id, event_type, content, None,
                                         txn=_txn(req, txn_id), ts=_appservice_ts(req))
    return {"event_id": ev.event_id}


async def _same_state(req: Req, room_id: str, event_type: str, state_key: str) -> Event | None:
    """The requester's own current state event with this content, if it is one (sending
    it again sends nothing)."""
    content = req.json()
    head = await req.hs.tenancy.head_for(req.user_id, room_id)
    if head is None:
        raise not_found("unknown room")
    current = head.state.get((event_type, state_key))
    if current is not None and current.sender == req.user_id and current.content == content:
        return current
    return None


async def _state_limit(req: Req, room_id: str, event_type: str, state_key: str = "") -> None:
    if event_type != "m.room.member" and await _same_state(req, room_id, event_type, state_key) is None:
        await _message_limit(req)


async def put_state(req: Req, room_id: str, event_type: str, state_key: str = ""):
    content = req.json()
    current = await _same_state(req, room_id, event_type, state_key)
    if current is not None:
        return {"event_id": current.event_id}  # same state again: nothing to send
    ev = await req.hs.event_creator.send(room_id, req.user_id, event_type, content, state_key,
                                         ts=_appservice_ts(req))
    return {"event_id": ev.event_id}


async def state_for_reader(req: Req, room_id: str) -> dict[tuple[str, str], Event]:
    """Current state for members; for past members, the state when they left."""
    hist = await visibility.require_can_read(req.hs, room_id, req.user_id)
    head = await req.hs.room_heads.get(room_id)
    assert head is not None
    if head.membership_of(req.user_id) == "join" or not hist.memberships:
        return head.state
    last_event = await req.hs.db.run(_last_membership_event, room_id, req.user_id)
    return await state_at_event(req, last_event)


def _last_membership_event(cur, room_id: str, user_id: str) -> str:
    cur.execute("SELECT event_id FROM room_memberships WHERE room_id = %s AND user_id = %s"
                " ORDER BY stream_ordering DESC LIMIT 1", (room_id, user_id))
    return cur.fetchone()[0]


async def state_at_event(req: Req, event_id: str) -> dict[tuple[str, str], Event]:
    def txn(cur):
        group = state_store.get_state_group_of_event(cur, event_id)
        return state_store.get_state_group_map(cur, group) if group is not None else {}

    ids = await req.hs.db.run(txn)
    found = await req.hs.event_cache.get_many(list(ids.values()))
    return {k: found[eid] for k, eid in ids.items() if eid in found}


async def get_state(req: Req, room_id: str):
    state = await state_for_reader(req, room_id)
    return await serialize_for(req, list(state.values()))


async def get_state_event(req: Req, room_id: str, event_type: str, state_key: str = ""):
    state = await state_for_reader(req, room_id)
    ev = state.get((event_type, state_key))
    if ev is None:
        raise not_found("state event not found")
    if req.query("format") == "event":
        return (await serialize_for(req, [ev]))[0]
    return (await serialize_for(req, [ev]))[0]["content"]


async def _visible_event(req: Req, room_id: str, event_id: str):
    """The event and the asker's history in its room; 404 alike for missing and hidden,
    and for events of another tenant's room."""
    ev = await req.hs.event_cache.get(event_id)
    if ev is None or ev.room_id != room_id or await req.hs.tenancy.head_for(req.user_id, room_id) is None:
        raise not_found("event not found")
    hist = await visibility.require_can_read(req.hs, room_id, req.user_id)
    if not await visibility.visible_events(req.hs, hist, room_id, [ev]):
        raise not_found("event not found")
    return ev, hist


async def get_event(req: Req, room_id: str, event_id: str):
    try:
        ev, hist = await _visible_event(req, room_id, event_id)
    except MatrixError as e:
        if e.status != 403:
            raise
        # The spec: 404 alike for a missing event and one the asker may not see.
        raise not_found("event not found") from None
    return (await serialize_for(req, [ev], hist))[0]


def parse_event_filter(req: Req) -> EventFilter:
    """The request's `filter` query parameter (a RoomEventFilter as JSON); none: one that
    lets everything through. Not JSON: 400 M_INVALID_PARAM."""
    raw = req.query("filter")
    if not raw:
        return EventFilter()
    try:
        obj = parse_json_body(raw.encode("utf-8"))
    except MatrixError:
        raise MatrixError(400, "M_INVALID_PARAM", "filter must be a JSON object") from None
    return EventFilter.parse(obj)


async def token_position(req: Req, room_id: str, token: str) -> Position:
    """The (depth, stream) position a /messages, /sync or /relations token names."""
    depth, stream = parse_token(token)
    if depth is None:
        depth = await req.hs.db.run(events_store.depth_at_stream, room_id, stream)
        return (depth, stream + 1)  # a stream token includes the event at its position
    return (depth, stream)


async def _leave_position(req: Req, room_id: str, hist) -> Position | None:
    """For a user who left (or was kicked or banned from) a room that is not world-readable,
    the position just after that membership event: paging back starts there, with it."""
    head = await req.hs.room_heads.get(room_id)
    if head is None or head.membership_of(req.user_id) == "join" or not hist.memberships \
            or hist.memberships[-1][1] not in ("leave", "ban"):
        return None
    vis = head.state.get(("m.room.history_visibility", ""))
    if vis is not None and vis.content.get("history_visibility") == "world_readable":
        return None
    leave = await req.hs.event_cache.get(await req.hs.db.run(_last_membership_event, room_id, req.user_id))
    return (leave.depth, (leave.stream_ordering or 0) + 1) if leave is not None else None


async def messages(req: Req, room_id: str):
    direction = req.query("dir", "b")
    if direction not in ("b", "f"):
        raise MatrixError(400, "M_INVALID_PARAM", "dir must be 'b' or 'f'")
    limit = min(max(req.query_int("limit", 10) or 0, 0), MAX_LIMIT)
    hist = await visibility.require_can_read(req.hs, room_id, req.user_id)
    from_token = req.query("from")
    if from_token:
        start = await token_position(req, room_id, from_token)
    else:
        start = END if direction == "b" else START
    if direction == "b":
        start = min(start, await _leave_position(req, room_id, hist) or start)
    to_token = req.query("to")
    to_pos = await token_position(req, room_id, to_token) if to_token else None
    f = parse_event_filter(req)
    stored = await req.hs.db.run(
        events_store.paginate_room, room_id, start, direction, limit, to_pos, f.sql_lists())
    if direction == "b" and req.hs.federation is not None \
            and await req.hs.federation.backfill.fill(room_id, limit, start[0], stored, len(stored) < limit):
        # Paged into a gap (or past the oldest event) of a room shared with other servers:
        # they sent the events missing there.
        stored = await req.hs.db.run(
            events_store.paginate_room, room_id, start, direction, limit, to_pos, f.sql_lists())
    head = await req.hs.room_heads.get(room_id)
    events = req.hs.event_cache.from_stored_list(stored, head.room_version.identifier)
    # The last row's position is the next token; wildcard types are matched here.
    not_ignored = await _not_ignored(req)
    visible = [e for e in await visibility.visible_events(req.hs, hist, room_id, events)
               if not_ignored(e) and (f.passes_all or f.allows(e.type, e.sender, e.content))]
    result: dict[str, Any] = {
        "chunk": await serialize_for(req, visible, hist),
        "start": from_token or topo_token(start),
    }
    if len(events) == limit and events:
        last = events[-1]
        result["end"] = topo_token((last.depth, last.stream_ordering))
    if f.lazy_load_members and visible:
        senders = {e.sender for e in visible}
        members = [head.state[("m.room.member", s)] for s in senders if ("m.room.member", s) in head.state]
        result["state"] = await serialize_for(req, members)
    return result


async def context(req: Req, room_id: str, event_id: str):
    ev, hist = await _visible_event(req, room_id, event_id)
    not_ignored = await _not_ignored(req)
    if not not_ignored(ev):
        raise not_found("event not found")
    limit = min(max(req.query_int("limit", 10) or 0, 0), MAX_LIMIT)
    f = parse_event_filter(req)
    pos = (ev.depth, ev.stream_ordering)
    filters = f.sql_lists()
    before_n = limit // 2
    after_n = limit - before_n

    def txn(cur):
        return (events_store.paginate_room(cur, room_id, pos, "b", before_n, None, filters),
                events_store.paginate_room(cur, room_id, pos, "f", after_n, None, filters))

    before_rows, after_rows = await req.hs.db.run(txn)
    head = await req.hs.room_heads.get(room_id)
    version = head.room_version.identifier
    before = req.hs.event_cache.from_stored_list(before_rows, version)
    after = req.hs.event_cache.from_stored_list(after_rows, version)
    first = before[-1] if before else ev
    last = after[-1] if after else ev
    state = await state_at_event(req, event_id)
    state_events = list(state.values())
    if f.lazy_load_members:
        senders = {e.sender for e in before + [ev] + after}
        state_events = [e for k, e in state.items() if k[0] != "m.room.member" or k[1] in senders]
    return {
        "event": (await serialize_for(req, [ev], hist))[0],
        "events_before": await serialize_for(
            req, [e for e in await visibility.visible_events(req.hs, hist, room_id, before) if not_ignored(e)], hist),
        "events_after": await serialize_for(
            req, [e for e in await visibility.visible_events(req.hs, hist, room_id, after) if not_ignored(e)], hist),
        "start": topo_token((first.depth, first.stream_ordering)),
        "end": topo_token((last.depth, last.stream_ordering)),
        "state": await serialize_for(req, state_events),
    }


async def redact(req: Req, room_id: str, event_id: str, txn_id: str):
    body = req.json(allow_empty=True)
    content: dict[str, Any] = {"redacts": event_id}
    if isinstance(body.get("reason"), str):
        content["reason"] = body["reason"]
    ev = await req.hs.event_creator.send(room_id, req.user_id, "m.room.redaction", content,
                                         None, txn=_txn(req, txn_id))
    return {"event_id": ev.event_id}


def register(router: Router) -> None:
    router.client("PUT", "/rooms/{room_id}/send/{event_type}/{txn_id}", send_event, limit=_message_limit)
    router.client("GET", "/rooms/{room_id}/state", get_state)
    router.client("GET", "/rooms/{room_id}/state/{event_type}/?", get_state_event)
    router.client("GET", "/rooms/{room_id}/state/{event_type}/{state_key}", get_state_event)
    router.client("PUT", "/rooms/{room_id}/state/{event_type}/?", put_state, limit=_state_limit)
    router.client("PUT", "/rooms/{room_id}/state/{event_type}/{state_key}", put_state, limit=_state_limit)
    router.client("GET", "/rooms/{room_id}/event/{event_id}", get_event)
    router.client("GET", "/rooms/{room_id}/messages", messages)
    router.client("GET", "/rooms/{room_id}/context/{event_id}", context)
    router.client("PUT", "/rooms/{room_id}/redact/{event_id}/{txn_id}", redact, limit=_message_limit)
