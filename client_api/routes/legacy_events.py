"""Deprecated endpoints older bots and tools still call: GET /events (the event stream),
GET /events/{eventId}, GET /initialSync and GET /rooms/{roomId}/initialSync. The work is
done by the sync engine (sync/legacy_events.py); here requests are parsed and events
serialized."""
from __future__ import annotations

from typing import Any

from client_api.http import Req, Router
from client_api.routes.room_events import serialize_for
from client_api.routes.sync import MAX_SYNC_TIMEOUT_MS
from homeserver import visibility
from homeserver.errors import MatrixError, not_found
from sync.legacy_events import LegacyEvents, RoomSnapshot
from sync.sync_handler import MAX_TIMELINE_LIMIT

DEFAULT_STREAM_TIMEOUT_MS = 30_000
DEFAULT_LIMIT = 10


def _legacy(req: Req) -> LegacyEvents:
    return LegacyEvents(req.hs, req.hs.sync)


def _limit(req: Req) -> int:
    limit = req.query_int("limit", DEFAULT_LIMIT)
    if limit is None or limit < 0:
        raise MatrixError(400, "M_INVALID_PARAM", "limit must be a non-negative integer")
    return min(limit, MAX_TIMELINE_LIMIT)


async def event_stream(req: Req):
    timeout = req.query_int("timeout", DEFAULT_STREAM_TIMEOUT_MS)
    timeout = min(max(timeout or 0, 0), MAX_SYNC_TIMEOUT_MS)
    chunk = await _legacy(req).stream(req.user_id, req.requester.device_id, req.query("from"),
                                      timeout, req.query("room_id"))
    return {"chunk": await serialize_for(req, chunk.events) + chunk.ephemeral,
            "start": chunk.start.encode(), "end": chunk.end.encode()}


async def get_event(req: Req, event_id: str):
    """Any room's event by id; an event the asker may not see (another room's history,
    another tenant's room) is answered exactly as a missing one."""
    ev = await req.hs.event_cache.get(event_id)
    if ev is None:
        raise not_found("event not found")
    try:
        hist = await visibility.require_can_read(req.hs, ev.room_id, req.user_id)
    except MatrixError:
        raise not_found("event not found") from None
    if not hist.may_see(ev):
        raise not_found("event not found")
    return (await serialize_for(req, [ev]))[0]


async def _snapshot_json(req: Req, snap: RoomSnapshot) -> dict[str, Any]:
    out: dict[str, Any] = {"room_id": snap.room_id}
    if snap.membership is not None:
        out["membership"] = snap.membership
    if snap.invite is not None:  # /initialSync lists invites with the invite event only
        out["invite"] = (await serialize_for(req, [snap.invite]))[0]
        return out
    out.update({
        "messages": {"chunk": await serialize_for(req, snap.events), "start": snap.start, "end": snap.end},
        "state": await serialize_for(req, snap.state),
        "visibility": snap.visibility,
        "account_data": snap.account_data,
    })
    return out


async def initial_sync(req: Req):
    archived = req.query("archived", "false")
    if archived not in ("true", "false"):
        raise MatrixError(400, "M_INVALID_PARAM", "archived must be true or false")
    result = await _legacy(req).initial_sync(req.user_id, _limit(req), archived == "true")
    result["rooms"] = [await _snapshot_json(req, s) for s in result["rooms"]]
    return result


async def room_initial_sync(req: Req, room_id: str):
    return await _snapshot_json(req, await _legacy(req).room_initial_sync(req.user_id, room_id, _limit(req)))


def register(router: Router) -> None:
    router.client("GET", "/events", event_stream)
    router.client("GET", "/events/{event_id}", get_event)
    router.client("GET", "/initialSync", initial_sync)
    router.client("GET", "/rooms/{room_id}/initialSync", room_initial_sync)
