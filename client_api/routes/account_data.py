"""Account data (global and per room), room tags, and stored filters."""
from __future__ import annotations

from client_api.http import Req, Router
from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.filtering import Filter
from storage import account_data as store


def _own(req: Req, user_id: str) -> None:
    if user_id != req.user_id:
        raise forbidden("you may only access your own account data")


def _settable(data_type: str) -> None:
    # These have their own endpoints (read markers, push rules); the spec forbids them here.
    if data_type in ("m.fully_read", "m.push_rules"):
        raise MatrixError(405, "M_BAD_JSON", f"{data_type} cannot be set through this API")


async def put_global(req: Req, user_id: str, data_type: str):
    _own(req, user_id)
    _settable(data_type)
    await req.hs.sync.account_data.put(user_id, "", data_type, req.json())
    return {}


async def get_global(req: Req, user_id: str, data_type: str):
    _own(req, user_id)
    content = await req.hs.db.run(store.get_account_data, user_id, "", data_type)
    if content is None:
        raise not_found("account data not found")
    return content


async def put_room(req: Req, user_id: str, room_id: str, data_type: str):
    _own(req, user_id)
    _settable(data_type)
    if not room_id.startswith("!"):
        raise MatrixError(400, "M_INVALID_PARAM", "invalid room id")
    await req.hs.sync.account_data.put(user_id, room_id, data_type, req.json())
    return {}


async def get_room(req: Req, user_id: str, room_id: str, data_type: str):
    _own(req, user_id)
    content = await req.hs.db.run(store.get_account_data, user_id, room_id, data_type)
    if content is None:
        raise not_found("account data not found")
    return content


async def get_tags(req: Req, user_id: str, room_id: str):
    _own(req, user_id)
    content = await req.hs.db.run(store.get_account_data, user_id, room_id, "m.tag")
    return {"tags": (content or {}).get("tags", {})}


async def _change_tags(req: Req, user_id: str, room_id: str, tag: str, value: dict | None):
    _own(req, user_id)

    def change(content: dict | None) -> dict:
        tags = dict((content or {}).get("tags", {}))
        if value is None:
            tags.pop(tag, None)
        else:
            tags[tag] = value
        return {"tags": tags}

    await req.hs.sync.account_data.put(user_id, room_id, "m.tag", {}, update=change)
    return {}


async def put_tag(req: Req, user_id: str, room_id: str, tag: str):
    body = req.json()
    order = body.get("order")
    if order is not None and (not isinstance(order, (int, float)) or isinstance(order, bool)):
        raise MatrixError(400, "M_BAD_JSON", "order must be a number")
    return await _change_tags(req, user_id, room_id, tag, body)


async def delete_tag(req: Req, user_id: str, room_id: str, tag: str):
    return await _change_tags(req, user_id, room_id, tag, None)


async def create_filter(req: Req, user_id: str):
    _own(req, user_id)
    body = req.json()
    Filter.parse(body)  # what /sync will read back must parse: refuse it now, not then
    filter_id = await req.hs.db.run(store.create_filter, user_id, body)
    return {"filter_id": str(filter_id)}


async def get_filter(req: Req, user_id: str, filter_id: str):
    _own(req, user_id)
    if not (filter_id.isascii() and filter_id.isdigit()):
        raise not_found("no such filter")
    found = await req.hs.db.run(store.get_filter, user_id, int(filter_id))
    if found is None:
        raise not_found("no such filter")
    return found


def register(router: Router) -> None:
    router.client("PUT", "/user/{user_id}/account_data/{data_type}", put_global)
    router.client("GET", "/user/{user_id}/account_data/{data_type}", get_global)
    router.client("PUT", "/user/{user_id}/rooms/{room_id}/account_data/{data_type}", put_room)
    router.client("GET", "/user/{user_id}/rooms/{room_id}/account_data/{data_type}", get_room)
    router.client("GET", "/user/{user_id}/rooms/{room_id}/tags", get_tags)
    router.client("PUT", "/user/{user_id}/rooms/{room_id}/tags/{tag}", put_tag)
    router.client("DELETE", "/user/{user_id}/rooms/{room_id}/tags/{tag}", delete_tag)
    router.client("POST", "/user/{user_id}/filter", create_filter)
    router.client("GET", "/user/{user_id}/filter/{filter_id}", get_filter)
