"""Relations and threads (client-server v1):

    GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]
    GET /_matrix/client/v1/rooms/{roomId}/threads

Every event served carries its bundled aggregations (through serialize_for)."""
from __future__ import annotations

from typing import Any

from client_api.http import Req, Router
from client_api.routes.room_events import serialize_for, token_position
from homeserver import visibility
from homeserver.errors import MatrixError, invalid_param, not_found
from homeserver.event import Event
from homeserver.pagination import END, START, parse_token, topo_token
from homeserver.visibility import UserRoomHistory
from storage import relations as relations_store

V1 = "/_matrix/client/v1"
DEFAULT_LIMIT = 10
MAX_LIMIT = 1000
RECURSION_DEPTH = 3      # levels of relations followed with recurse=true (the spec asks >= 3)
DEFAULT_THREADS_LIMIT = 10
MAX_THREADS_LIMIT = 100


def _limit(req: Req, default: int, maximum: int) -> int:
    limit = req.query_int("limit", default)
    assert limit is not None
    if limit < 1:
        raise invalid_param("limit must be an integer greater than zero")
    return min(limit, maximum)


def _recurse(req: Req) -> bool | None:
    """None when the parameter was not given (the response then has no recursion_depth)."""
    value = req.query("recurse")
    if value is None:
        return None
    if value not in ("true", "false"):
        raise invalid_param("recurse must be true or false")
    return value == "true"


async def _visible_parent(req: Req, room_id: str, event_id: str) -> tuple[Event, UserRoomHistory]:
    """The parent and the asker's history of its room. A room that does not exist, that
    belongs to another tenant or that the asker may not read, and an event missing or
    hidden from them, all answer the same 404 (the spec's only error here)."""
    try:
        hist = await visibility.require_can_read(req.hs, room_id, req.user_id)
    except MatrixError as e:
        if e.status != 403:
            raise
        raise not_found("Event not found") from None
    parent = await req.hs.event_cache.get(event_id)
    if parent is None or parent.room_id != room_id or not hist.may_see(parent):
        raise not_found("Event not found")
    return parent, hist


async def relations(req: Req, room_id: str, event_id: str, rel_type: str | None = None,
                    event_type: str | None = None):
    direction = req.query("dir", "b")
    if direction not in ("b", "f"):
        raise invalid_param("dir must be 'b' or 'f'")
    limit = _limit(req, DEFAULT_LIMIT, MAX_LIMIT)
    recurse = _recurse(req)
    _, hist = await _visible_parent(req, room_id, event_id)
    from_token, to_token = req.query("from"), req.query("to")
    start = await token_position(req, room_id, from_token) if from_token else (END if direction == "b" else START)
    to_pos = await token_position(req, room_id, to_token) if to_token else None
    levels = RECURSION_DEPTH if recurse else 1
    # One row more than the page: whether there is a next page is known, not guessed.
    stored = await req.hs.db.run(relations_store.children, event_id, rel_type, event_type, start,
                                 direction, limit + 1, to_pos, levels)
    head = await req.hs.room_heads.get(room_id)
    assert head is not None  # require_can_read found it
    events = req.hs.event_cache.from_stored_list(stored[:limit], head.room_version.identifier)
    result: dict[str, Any] = {"chunk": await serialize_for(req, [e for e in events if hist.may_see(e)], hist)}
    if len(stored) > limit:  # the last row read, seen or not, is where the next page starts
        result["next_batch"] = topo_token((events[-1].depth, events[-1].stream_ordering or 0))
    if from_token:
        result["prev_batch"] = from_token
    if recurse is not None:
        result["recursion_depth"] = levels
    return result


async def threads(req: Req, room_id: str):
    include = req.query("include", "all")
    if include not in ("all", "participated"):
        raise invalid_param("include must be 'all' or 'participated'")
    limit = _limit(req, DEFAULT_THREADS_LIMIT, MAX_THREADS_LIMIT)
    before = END
    from_token = req.query("from")
    if from_token:
        depth, stream = parse_token(from_token)
        if depth is None:
            raise invalid_param("Unknown pagination token")
        before = (depth, stream)
    # A missing room and another tenant's room answer alike (403, as /messages does).
    hist = await visibility.require_can_read(req.hs, room_id, req.user_id)
    rows = await req.hs.db.run(relations_store.thread_roots, room_id, before, limit + 1,
                               req.user_id if include == "participated" else None)
    more, rows = len(rows) > limit, rows[:limit]
    found = await req.hs.event_cache.get_many([root for root, _, _ in rows])
    roots = [found[root] for root, _, _ in rows if root in found]
    visible = [e for e in roots if e.room_id == room_id and hist.may_see(e)]
    result: dict[str, Any] = {"chunk": await serialize_for(req, visible, hist)}
    if more:
        result["next_batch"] = topo_token((rows[-1][1], rows[-1][2]))
    return result


def register(router: Router) -> None:
    base = V1 + "/rooms/{room_id}/relations/{event_id}"
    router.add("GET", base, relations)
    router.add("GET", base + "/{rel_type}", relations)
    router.add("GET", base + "/{rel_type}/{event_type}", relations)
    router.add("GET", V1 + "/rooms/{room_id}/threads", threads)
