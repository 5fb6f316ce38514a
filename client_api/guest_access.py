"""What guest accounts may do (the spec's "Guest access" module): only the endpoints
listed here, everything else 403 M_GUEST_ACCESS_FORBIDDEN. Joins go only to rooms that
admit guests (homeserver/guests.py); membership is changed through join and leave only,
and of the profile only the display name. Called by the router for guest requesters."""
from __future__ import annotations

from typing import TYPE_CHECKING

from client_api.http import CLIENT_PREFIX, Req
from homeserver import room_aliases
from homeserver.errors import MatrixError, forbidden
from homeserver.guests import guests_may_join

if TYPE_CHECKING:
    from client_api.http import Route

_JOIN = {"/join/{room_id_or_alias}", "/rooms/{room_id}/join"}
_PUT_STATE = {"/rooms/{room_id}/state/{event_type}/?", "/rooms/{room_id}/state/{event_type}/{state_key}"}
_PROFILE_FIELD = "/profile/{user_id}/{field}"

# (method, path under /_matrix/client/v3) as the routes register them.
ALLOWED = {(CLIENT_PREFIX + path, method) for method, paths in {
    # reading rooms and syncing
    "GET": ["/sync", "/events", "/rooms/{room_id}/initialSync", "/rooms/{room_id}/state",
            "/rooms/{room_id}/state/{event_type}/?", "/rooms/{room_id}/state/{event_type}/{state_key}",
            "/rooms/{room_id}/event/{event_id}", "/rooms/{room_id}/context/{event_id}",
            "/rooms/{room_id}/messages", "/rooms/{room_id}/members", "/directory/room/{alias}",
            # own account, and what clients read at start-up
            "/account/whoami", "/devices", "/devices/{device_id}", "/profile/{user_id}", _PROFILE_FIELD,
            "/presence/{user_id}/status", "/user/{user_id}/filter/{filter_id}", "/capabilities",
            "/pushrules/?", "/voip/turnServer", "/keys/changes"],
    # taking part
    "POST": [*_JOIN, "/rooms/{room_id}/leave", "/rooms/{room_id}/receipt/{receipt_type}/{event_id}",
             "/rooms/{room_id}/read_markers", "/user/{user_id}/filter", "/publicRooms",
             "/keys/upload", "/keys/query", "/keys/claim", "/logout", "/logout/all"],
    "PUT": ["/rooms/{room_id}/send/{event_type}/{txn_id}", *_PUT_STATE, "/rooms/{room_id}/typing/{user_id}",
            "/sendToDevice/{event_type}/{txn_id}", _PROFILE_FIELD, "/devices/{device_id}",
            "/presence/{user_id}/status"],
}.items() for path in paths}


def _path(route: "Route") -> str:
    return route.pattern[len(CLIENT_PREFIX):] if route.pattern.startswith(CLIENT_PREFIX) else route.pattern


async def check(req: Req, route: "Route", params: dict[str, str]) -> None:
    """Refuse what a guest may not do; let everything else reach its handler."""
    if (route.pattern, route.method) not in ALLOWED:
        raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "guest accounts may not use this endpoint")
    path = _path(route)
    if path in _JOIN:
        await _check_join(req, params.get("room_id") or params["room_id_or_alias"])
    elif path in _PUT_STATE and params.get("event_type") == "m.room.member":
        raise forbidden("guests change their membership only by joining and leaving")
    elif path == _PROFILE_FIELD and route.method == "PUT" and params.get("field") != "displayname":
        raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "guests may only change their display name")


async def _check_join(req: Req, room_id_or_alias: str) -> None:
    room_id = room_id_or_alias
    if room_id_or_alias.startswith("#"):
        try:
            room_id, _ = await room_aliases.resolve(req.hs, req.user_id, room_id_or_alias)
        except MatrixError:
            return  # the handler gives the same answer as for anyone
    head = await req.hs.tenancy.head_for(req.user_id, room_id)
    if head is None or head.membership_of(req.user_id) == "join":
        return  # missing or another tenant's: the handler answers, exactly as for any user
    if not guests_may_join(head):
        raise forbidden("guests may not join this room")
