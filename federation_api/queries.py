"""Queries other servers make about our users and rooms: profiles, aliases, devices and
E2E keys, the public room directory, space hierarchies and OpenID tokens."""
from __future__ import annotations

from typing import Any

from client_api.http import Req, Router
from client_api.routes import keys as client_keys
from client_api.routes.directory import _public_rooms
from client_api.routes.openid import userinfo
from federation_api.auth import authenticate_origin
from homeserver.errors import MatrixError, bad_json, missing_param, not_found
from homeserver.ids import is_valid_room_alias, is_valid_user_id
from homeserver.space_hierarchy import room_summary, space_children
from storage import directory as directory_store

F1 = "/_matrix/federation/v1"


async def _local_user(req: Req, user_id: str, origin: str) -> None:
    """404 unless `user_id` is an existing local user `origin` may know of."""
    if not is_valid_user_id(user_id) or not req.hs.accounts.is_mine(user_id):
        raise not_found("no such user here")
    profile = await req.hs.profiles.get(user_id)
    if profile is None or not await req.hs.federation.exposure.user_open(user_id, origin):
        raise not_found("no such user here")


async def query_profile(req: Req):
    origin = await authenticate_origin(req)
    user_id = req.query("user_id")
    if not user_id:
        raise missing_param("user_id is required")
    await _local_user(req, user_id, origin)
    profile = await req.hs.profiles.get(user_id) or {}
    field = req.query("field")
    if field is not None:
        if field not in ("displayname", "avatar_url"):
            raise MatrixError(400, "M_INVALID_PARAM", "field must be displayname or avatar_url")
        if field not in profile:
            raise not_found(f"{field} is not set")
        return {field: profile[field]}
    return profile


async def query_directory(req: Req):
    origin = await authenticate_origin(req)
    alias = req.query("room_alias")
    if not alias:
        raise missing_param("room_alias is required")
    if not is_valid_room_alias(alias) or alias.split(":", 1)[1] != req.hs.server_name:
        raise not_found("room alias not found")
    found = await req.hs.db.run(directory_store.get_alias, alias)
    head = await req.hs.federation.exposure.room_for(found[0], origin, member_required=False) if found else None
    if head is None:
        raise not_found("room alias not found")
    servers = req.hs.federation.exposure.servers_for(head)
    return {"room_id": head.room_id, "servers": servers}


async def user_devices(req: Req, user_id: str):
    origin = await authenticate_origin(req)
    await _local_user(req, user_id, origin)
    keys = await client_keys.local_device_keys(req.hs, {user_id: []}, None)
    devices = []
    for device_id, obj in sorted(keys["device_keys"].get(user_id, {}).items()):
        name = obj.pop("unsigned", {}).get("device_display_name")
        devices.append({"device_id": device_id, "keys": obj, **({"device_display_name": name} if name else {})})
    result: dict[str, Any] = {"user_id": user_id, "devices": devices,
                              "stream_id": req.hs.sync.device_lists.stream.current}
    if user_id in keys["master_keys"]:
        result["master_key"] = keys["master_keys"][user_id]
    if user_id in keys["self_signing_keys"]:
        result["self_signing_key"] = keys["self_signing_keys"][user_id]
    return result


def _requested_local(req: Req, wanted: Any, what: str) -> dict:
    if not isinstance(wanted, dict):
        raise bad_json(f"{what} must be an object keyed by user id")
    return {u: v for u, v in wanted.items() if req.hs.accounts.is_mine(u)}


async def _open_users(req: Req, users: list[str], origin: str) -> set[str]:
    return {u for u in users if await req.hs.federation.exposure.user_open(u, origin)}


async def user_keys_query(req: Req):
    origin = await authenticate_origin(req)
    wanted = _requested_local(req, req.json().get("device_keys"), "device_keys")
    for devices in wanted.values():
        if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
            raise bad_json("device_keys must map each user id to a list of device ids")
    allowed = await _open_users(req, list(wanted), origin)
    result = await client_keys.local_device_keys(req.hs, {u: d for u, d in wanted.items() if u in allowed}, None)
    result.pop("user_signing_keys", None)  # only ever for the user themself
    return result


async def user_keys_claim(req: Req):
    origin = await authenticate_origin(req)
    wanted = _requested_local(req, req.json().get("one_time_keys"), "one_time_keys")
    allowed = await _open_users(req, list(wanted), origin)
    requests: list[tuple[str, str, str]] = []
    for user_id, devices in wanted.items():
        if not isinstance(devices, dict) or not all(isinstance(a, str) for a in devices.values()):
            raise bad_json("one_time_keys must map each user id to device ids and algorithms")
        if user_id in allowed:
            requests.extend((user_id, d, a) for d, a in devices.items())
    return {"one_time_keys": await client_keys.claim_local_keys(req.hs, requests)}


async def public_rooms_get(req: Req):
    await authenticate_origin(req)
    # Only rooms without a tenant are listed to other servers (req.requester stays None).
    return await _public_rooms(req, req.query_int("limit"), req.query("since"), None)


async def public_rooms_post(req: Req):
    await authenticate_origin(req)
    body = req.json(allow_empty=True)
    f = body.get("filter") or {}
    if not isinstance(f, dict):
        raise bad_json("filter must be an object")
    term = f.get("generic_search_term")
    if term is not None and not isinstance(term, str):
        raise bad_json("generic_search_term must be a string")
    return await _public_rooms(req, body.get("limit"), body.get("since"), term)


async def hierarchy(req: Req, room_id: str):
    """The room's summary and its direct children's, as far as `origin` may see them:
    rooms open to federation that are public, world-readable, or have its members."""
    origin = await authenticate_origin(req)
    suggested_only = req.query("suggested_only", "false") == "true"
    exposure = req.hs.federation.exposure
    root = await exposure.room_for(room_id, origin, member_required=False)
    if root is None or not exposure.previewable(root, origin):
        raise not_found("room not found")
    children = space_children(root, suggested_only)
    rooms, inaccessible = [], []
    for ev in children:
        head = await exposure.room_for(ev.state_key, origin, member_required=False)
        if head is None:
            continue  # unknown here: the asker may try the child's own servers
        if not exposure.previewable(head, origin):
            inaccessible.append(head.room_id)
            continue
        rooms.append(room_summary(head, space_children(head, suggested_only)))
    return {"room": room_summary(root, children), "children": rooms, "inaccessible_children": inaccessible}


def register(router: Router) -> None:
    router.add("GET", F1 + "/query/profile", query_profile, auth=False)
    router.add("GET", F1 + "/query/directory", query_directory, auth=False)
    router.add("GET", F1 + "/user/devices/{user_id}", user_devices, auth=False)
    router.add("POST", F1 + "/user/keys/query", user_keys_query, auth=False)
    router.add("POST", F1 + "/user/keys/claim", user_keys_claim, auth=False)
    router.add("GET", F1 + "/publicRooms", public_rooms_get, auth=False)
    router.add("POST", F1 + "/publicRooms", public_rooms_post, auth=False)
    router.add("GET", F1 + "/hierarchy/{room_id}", hierarchy, auth=False)
    # OpenID userinfo is also served here (it is a federation endpoint, unauthenticated).
    router.add("GET", F1 + "/openid/userinfo", userinfo, auth=False)
