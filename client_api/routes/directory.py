"""Room aliases and the public room directory."""
from __future__ import annotations

from client_api.http import Req, Router, access_token_of, authenticate
from homeserver import auth_rules, room_aliases, room_directory
from homeserver.errors import MatrixError, forbidden, not_found
from storage import directory as directory_store

MAX_DIRECTORY_LIMIT = 500


async def put_alias(req: Req, alias: str):
    place = room_aliases.place_of(req.hs, alias)
    if not place.local:
        raise MatrixError(400, "M_INVALID_PARAM", "alias must be on this server")
    room_id = req.json().get("room_id")
    if not isinstance(room_id, str):
        raise MatrixError(400, "M_BAD_JSON", "room_id is required")
    room_aliases.check_service_namespace(place, req.requester.app_service)
    await room_aliases.check_part(req.hs, req.user_id, place)
    head = await req.hs.tenancy.head_for(req.user_id, room_id)
    if head is None:
        raise not_found("unknown room")
    if head.membership_of(req.user_id) != "join" and not req.requester.is_admin:
        raise forbidden("you must be in the room to give it an alias")
    if not await req.hs.db.run(directory_store.create_alias, alias, room_id, req.user_id):
        raise MatrixError(409, "M_UNKNOWN", f"alias {alias} already exists")
    return {}


async def get_alias(req: Req, alias: str):
    room_id, _ = await room_aliases.resolve(req.hs, req.user_id, alias)
    return {"room_id": room_id, "servers": [req.hs.server_name]}


async def delete_alias(req: Req, alias: str):
    room_id, creator = await room_aliases.resolve(req.hs, req.user_id, alias, ask_service=False)
    if creator != req.user_id and not req.requester.is_admin:
        head = await req.hs.room_heads.get(room_id)
        # Room moderators who may change the canonical alias may also remove aliases.
        needed = auth_rules.get_required_level("m.room.canonical_alias", True, head.state) if head else 0
        if head is None or auth_rules.get_user_power_level(req.user_id, head.state) < needed \
                or head.membership_of(req.user_id) != "join":
            raise forbidden("you may not delete this alias")
    await req.hs.db.run(directory_store.delete_alias, alias)
    return {}


async def room_aliases_of(req: Req, room_id: str):
    head = await req.hs.tenancy.head_for(req.user_id, room_id)
    if head is None:
        raise not_found("unknown room")
    hv = head.state.get(("m.room.history_visibility", ""))
    world = hv is not None and hv.content.get("history_visibility") == "world_readable"
    if head.membership_of(req.user_id) != "join" and not world:
        raise forbidden("you are not in this room")
    return {"aliases": await req.hs.db.run(directory_store.aliases_for_room, room_id)}


async def get_visibility(req: Req, room_id: str):
    await _optional_auth(req)
    head = await req.hs.tenancy.head_for(req.user_id if req.requester else None, room_id)
    public = await req.hs.db.run(directory_store.get_room_public, room_id) if head else None
    if public is None:
        raise not_found("unknown room")
    return {"visibility": "public" if public else "private"}


async def set_visibility(req: Req, room_id: str):
    visibility = req.json().get("visibility", "public")
    if visibility not in ("public", "private"):
        raise MatrixError(400, "M_INVALID_PARAM", "visibility must be public or private")
    head = await req.hs.tenancy.head_for(req.user_id, room_id)
    if head is None:
        raise not_found("unknown room")
    needed = auth_rules.get_required_level("m.room.canonical_alias", True, head.state)
    if not req.requester.is_admin and (head.membership_of(req.user_id) != "join"
                                       or auth_rules.get_user_power_level(req.user_id, head.state) < needed):
        raise forbidden("you may not change this room's directory visibility")
    await room_directory.set_published(req.hs, room_id, visibility == "public")
    return {}


async def _public_rooms(req: Req, limit, since, term, instance_id=None, all_networks=False):
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise MatrixError(400, "M_INVALID_PARAM", "limit must be a non-negative integer")
    limit = min(limit if limit is not None else 100, MAX_DIRECTORY_LIMIT)
    offset = 0
    if since:
        if not (isinstance(since, str) and since.startswith("o") and since[1:].isascii() and since[1:].isdigit()):
            raise MatrixError(400, "M_INVALID_PARAM", "invalid since token")
        offset = int(since[1:])
    network = await _network(req, instance_id, all_networks)
    tenant = await req.hs.tenancy.tenant_of(req.user_id) if req.requester else None
    chunk: list[dict] = []
    total = 0
    if network != ():
        chunk, total = await req.hs.db.run(directory_store.public_rooms, term, offset, limit, tenant,
                                           network or None, all_networks)
    result = {"chunk": chunk, "total_room_count_estimate": total}
    if offset + len(chunk) < total:
        result["next_batch"] = f"o{offset + len(chunk)}"
    if offset > 0:
        result["prev_batch"] = f"o{max(0, offset - limit)}"
    return result


async def _network(req: Req, instance_id, all_networks) -> tuple | None:
    """The application-service network asked for: None for the homeserver's own directory
    (or every network), () for an instance id no service has (an empty directory)."""
    if instance_id is not None and not isinstance(instance_id, str):
        raise MatrixError(400, "M_BAD_JSON", "third_party_instance_id must be a string")
    if not isinstance(all_networks, bool):
        raise MatrixError(400, "M_BAD_JSON", "include_all_networks must be a boolean")
    if instance_id is None:
        return None
    if all_networks:
        raise MatrixError(400, "M_INVALID_PARAM", "third_party_instance_id and include_all_networks exclude each other")
    appservices = getattr(req.hs, "appservices", None)
    found = appservices.thirdparty.parse_instance_id(instance_id) if appservices is not None else None
    return found or ()


async def public_rooms_get(req: Req):
    await _optional_auth(req)
    all_networks = req.query("include_all_networks", "false")
    if all_networks not in ("true", "false"):
        raise MatrixError(400, "M_INVALID_PARAM", "include_all_networks must be true or false")
    return await _public_rooms(req, req.query_int("limit"), req.query("since"), None,
                               req.query("third_party_instance_id"), all_networks == "true")


async def public_rooms_post(req: Req):
    body = req.json(allow_empty=True)
    f = body.get("filter") or {}
    if not isinstance(f, dict):
        raise MatrixError(400, "M_BAD_JSON", "filter must be an object")
    term = f.get("generic_search_term")
    if term is not None and not isinstance(term, str):
        raise MatrixError(400, "M_BAD_JSON", "generic_search_term must be a string")
    return await _public_rooms(req, body.get("limit"), body.get("since"), term,
                               body.get("third_party_instance_id"), body.get("include_all_networks", False))


async def _optional_auth(req: Req) -> None:
    """publicRooms and a room's directory visibility may be asked anonymously; a token,
    when sent, scopes them to a tenant (anonymous askers see only tenant-less rooms)."""
    if access_token_of(req):
        req.requester = await authenticate(req)


def register(router: Router) -> None:
    router.client("PUT", "/directory/room/{alias}", put_alias)
    router.client("GET", "/directory/room/{alias}", get_alias)
    router.client("DELETE", "/directory/room/{alias}", delete_alias)
    router.client("GET", "/rooms/{room_id}/aliases", room_aliases_of)
    router.client("GET", "/directory/list/room/{room_id}", get_visibility, auth=False)  # token optional
    router.client("PUT", "/directory/list/room/{room_id}", set_visibility)
    router.client("GET", "/publicRooms", public_rooms_get, auth=False)  # tenant-less rooms only
    router.client("POST", "/publicRooms", public_rooms_post)
