"""Synapse's admin API for rooms: list, details, members, state, messages, forward
extremities (read only), block, delete (v2, asynchronous, with its status endpoints; v1,
synchronous), purge history and its status. Tenant admins see and manage only their tenant's rooms; any other room answers
404 like a missing one. Every change is audited."""
from __future__ import annotations

from client_api.admin_auth import (
    AdminScope,
    check_room_id,
    origin_of,
    query_bool,
    query_choice,
    query_count,
    query_dir,
    require_admin,
)
from client_api.http import Req, Router
from client_api.routes.room_events import MAX_LIMIT, _parse_filter, token_position, serialize_for
from homeserver import admin_tasks
from homeserver.errors import MatrixError, bad_json, not_found
from homeserver.pagination import END, START, topo_token
from storage import admin_rooms as admin_rooms_store
from storage import admin_tasks as tasks_store
from storage import events as events_store

V1 = "/_synapse/admin/v1"
V2 = "/_synapse/admin/v2"


async def list_rooms(req: Req):
    scope = await require_admin(req)
    start = query_count(req, "from", 0)
    limit = query_count(req, "limit", 100)
    order_by = query_choice(req, "order_by", "name", admin_rooms_store.ROOM_ORDER)
    search_term = req.query("search_term")
    if search_term == "":
        raise MatrixError(400, "M_INVALID_PARAM", "search_term cannot be an empty string")
    rooms, total = await req.hs.db.run(
        admin_rooms_store.list_rooms, req.hs.server_name, start, limit, order_by, query_dir(req),
        search_term, query_bool(req, "public_rooms"), query_bool(req, "empty_rooms"),
        scope.tenant, not scope.server_admin)
    result: dict = {"offset": start, "rooms": rooms, "total_rooms": total}
    if start + limit < total:
        result["next_batch"] = start + limit
    if start > 0:
        result["prev_batch"] = start - limit if start > limit else 0
    return result


async def room_details(req: Req, room_id: str):
    scope = await require_admin(req)
    await scope.room(req, room_id)
    details = await req.hs.db.run(admin_rooms_store.room_details, req.hs.server_name, room_id)
    if details is None:
        raise not_found("Room not found")
    details["io.erpchat.tenant_id"] = details.pop("tenant_id")
    return details


async def room_members(req: Req, room_id: str):
    scope = await require_admin(req)
    await scope.room(req, room_id)
    members = await req.hs.db.run(admin_rooms_store.joined_members, room_id)
    return {"members": members, "total": len(members)}


async def room_forward_extremities(req: Req, room_id: str):
    scope = await require_admin(req)
    await scope.room(req, room_id)
    results = await req.hs.db.run(admin_rooms_store.forward_extremities, room_id)
    return {"count": len(results), "results": results}


async def room_state(req: Req, room_id: str):
    scope = await require_admin(req)
    await scope.room(req, room_id)
    head = await req.hs.room_heads.get(room_id)
    if head is None:
        raise not_found("Room not found")
    only = req.query("type")
    events = [e for e in head.state.values() if only is None or e.type == only]
    return {"state": await serialize_for(req, events)}


async def room_messages(req: Req, room_id: str):
    """/messages with the admin's privilege: every event, whatever history visibility."""
    scope = await require_admin(req)
    await scope.room(req, room_id)
    direction = query_choice(req, "dir", "f", ("f", "b"))
    limit = min(query_count(req, "limit", 10), MAX_LIMIT)
    from_token = req.query("from")
    if from_token:
        start = await token_position(req, room_id, from_token)
    else:
        start = END if direction == "b" else START
    to_token = req.query("to")
    to_pos = await token_position(req, room_id, to_token) if to_token else None
    f = _parse_filter(req)
    stored = await req.hs.db.run(events_store.paginate_room, room_id, start, direction, limit, to_pos,
                                 f.sql_lists())
    head = await req.hs.room_heads.get(room_id)
    if head is None:
        raise not_found("Room not found")
    events = req.hs.event_cache.from_stored_list(stored, head.room_version.identifier)
    chunk = [e for e in events if f.passes_all or f.allows(e.type, e.sender, e.content)]
    result: dict = {"chunk": await serialize_for(req, chunk), "start": from_token or topo_token(start)}
    if len(events) == limit and events:
        result["end"] = topo_token((events[-1].depth, events[-1].stream_ordering))
    return result


# ---- block ------------------------------------------------------------------------------

async def _block_scope(req: Req, room_id: str) -> tuple[AdminScope, str | None]:
    """Blocking works for unknown rooms too (server admins); a tenant admin reaches only
    their tenant's rooms, known or blocked before."""
    scope = await require_admin(req)
    check_room_id(room_id)
    exists, tenant = await req.hs.db.run(admin_rooms_store.room_tenant, room_id)
    if not exists:
        exists, tenant = await req.hs.db.run(admin_rooms_store.blocked_tenant, room_id)
    if not scope.server_admin and (not exists or tenant != scope.tenant):
        raise not_found("Room not found")
    return scope, tenant


async def get_block(req: Req, room_id: str):
    await _block_scope(req, room_id)
    by = req.hs.room_blocks.blocked_by(room_id)
    return {"block": True, "user_id": by} if by is not None else {"block": False}


async def put_block(req: Req, room_id: str):
    _, tenant = await _block_scope(req, room_id)
    body = req.json()
    block = body.get("block")
    if "block" not in body:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing params: ['block']")
    if not isinstance(block, bool):
        raise bad_json("Param 'block' must be a boolean.")
    if block:
        await req.hs.room_blocks.block(room_id, req.user_id, tenant)
    else:
        await req.hs.room_blocks.unblock(room_id)
    await req.hs.audit.record("room.block" if block else "room.unblock", origin_of(req), target_room=room_id,
                              tenant_id=tenant)
    return {"block": block}


# ---- delete -----------------------------------------------------------------------------

def _bool_param(body: dict, key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise MatrixError(400, "M_BAD_JSON", f"Param '{key}' must be a boolean, if given")
    return value


async def _delete_params(req: Req, scope: AdminScope) -> admin_tasks.DeleteParams:
    body = req.json()  # Synapse: the body must be at least {}
    params = admin_tasks.DeleteParams(
        requester=req.user_id, block=_bool_param(body, "block", False), purge=_bool_param(body, "purge", True),
        force_purge=_bool_param(body, "force_purge", False))
    for key in ("new_room_user_id", "room_name", "message"):
        value = body.get(key)
        if value is not None and not isinstance(value, str):
            raise bad_json(f"{key} must be a string")
        setattr(params, key, value)
    if params.new_room_user_id is not None:
        if not req.hs.accounts.is_mine(params.new_room_user_id):
            raise MatrixError(400, "M_UNKNOWN", "User must be our own: " + params.new_room_user_id)
        try:
            await scope.user(req, params.new_room_user_id)
        except MatrixError:
            raise MatrixError(400, "M_UNKNOWN", "new_room_user_id must be an existing user") from None
    return params


async def _room_to_delete(req: Req, room_id: str) -> tuple[AdminScope, str | None]:
    scope = await require_admin(req)
    check_room_id(room_id)
    exists, tenant = await req.hs.db.run(admin_rooms_store.room_tenant, room_id)
    if not scope.server_admin and (not exists or tenant != scope.tenant):
        raise not_found("Room not found")
    return scope, tenant


async def delete_room_v2(req: Req, room_id: str):
    scope, tenant = await _room_to_delete(req, room_id)
    params = await _delete_params(req, scope)
    origin = origin_of(req)
    delete_id = await admin_tasks.start_delete_room(req.hs, room_id, tenant, params, origin)
    await req.hs.audit.record("room.delete", origin, target_room=room_id, tenant_id=tenant, delete_id=delete_id,
                              block=params.block, purge=params.purge, new_room_user_id=params.new_room_user_id)
    return {"delete_id": delete_id}


async def delete_room_v1(req: Req, room_id: str):
    """The synchronous form: answers once the room is shut down (and purged)."""
    scope, tenant = await _room_to_delete(req, room_id)
    params = await _delete_params(req, scope)
    exists = await req.hs.room_heads.get(room_id) is not None
    if not exists and not params.block:
        raise MatrixError(400, "M_UNKNOWN", f"Unknown room id {room_id}")
    result = await admin_tasks.shutdown_room(req.hs, room_id, tenant, params)
    if params.purge and exists:
        await admin_tasks.purge_room(req.hs, room_id, params.force_purge)
    await req.hs.audit.record("room.delete", origin_of(req), target_room=room_id, tenant_id=tenant,
                              block=params.block, purge=params.purge, **result.as_dict())
    return result.as_dict()


def _delete_status(task: dict) -> dict:
    out = {"delete_id": task["id"], "room_id": task["room_id"], "status": task["status"],
           "shutdown_room": task["result"] or {"kicked_users": [], "failed_to_kick_users": [],
                                               "local_aliases": [], "new_room_id": None}}
    if task["error"]:
        out["error"] = task["error"]
    return out


async def delete_status_by_room(req: Req, room_id: str):
    scope = await require_admin(req)
    check_room_id(room_id)
    tasks = [t for t in await req.hs.db.run(tasks_store.for_room, "delete_room", room_id,
                                            admin_tasks._now() - admin_tasks.STATUS_KEPT_MS)
             if scope.covers(t["tenant_id"])]
    if not tasks:
        raise not_found(f"No delete task for room_id '{room_id}' found")
    return {"results": [_delete_status(t) for t in tasks]}


async def _task(req: Req, task_id: str, kind: str) -> dict:
    scope = await require_admin(req)
    task = await req.hs.db.run(tasks_store.get, task_id)
    if task is None or task["kind"] != kind or not scope.covers(task["tenant_id"]):
        raise not_found(f"{'delete' if kind == 'delete_room' else 'purge'} id '{task_id}' not found")
    return task


async def delete_status(req: Req, delete_id: str):
    return _delete_status(await _task(req, delete_id, "delete_room"))


# ---- purge history ------------------------------------------------------------------------

async def purge_history(req: Req, room_id: str, event_id: str | None = None):
    scope = await require_admin(req)
    tenant = await scope.room(req, room_id)
    body = req.json(allow_empty=True)
    delete_local = bool(body.get("delete_local_events", False))
    if event_id is None:
        event_id = body.get("purge_up_to_event_id")
        if event_id is not None and not isinstance(event_id, str):
            raise bad_json("purge_up_to_event_id must be a string")
    if event_id is not None:
        position = await req.hs.db.run(events_store.get_event_position, event_id)
        # An event of another room answers like a missing one (Synapse says "wrong room"):
        # it may be another tenant's.
        if position is None or position[0] != room_id:
            raise not_found("Could not find event " + event_id)
        cutoff_depth = position[1]
    elif "purge_up_to_ts" in body:
        ts = body["purge_up_to_ts"]
        if type(ts) is not int:
            raise MatrixError(400, "M_BAD_JSON", "purge_up_to_ts must be an int")
        depth = await req.hs.db.run(_last_depth_before, room_id, ts)
        if depth is None:
            raise not_found("there is no event to be purged")
        cutoff_depth = depth
    else:
        raise MatrixError(400, "M_BAD_JSON", "must specify purge_up_to_event_id or purge_up_to_ts")
    origin = origin_of(req)
    purge_id = await admin_tasks.start_purge_history(req.hs, room_id, tenant, cutoff_depth, delete_local, origin)
    await req.hs.audit.record("room.purge_history", origin, target_room=room_id, tenant_id=tenant,
                              purge_id=purge_id, up_to_event_id=event_id, purge_up_to_ts=body.get("purge_up_to_ts"),
                              delete_local_events=delete_local)
    return {"purge_id": purge_id}


def _last_depth_before(cur, room_id: str, ts: int) -> int | None:
    """Like Synapse: the room's last event received before `ts` is kept, older ones go."""
    cur.execute("SELECT depth FROM events WHERE room_id = %s AND received_ts < %s"
                " ORDER BY stream_ordering DESC LIMIT 1", (room_id, ts))
    row = cur.fetchone()
    return row[0] if row else None


async def purge_status(req: Req, purge_id: str):
    task = await _task(req, purge_id, "purge_history")
    status = task["status"] if task["status"] in ("complete", "failed") else "active"
    out = {"status": status}
    if task["error"]:
        out["error"] = task["error"]
    return out


def register(router: Router) -> None:
    router.add("GET", V1 + "/rooms", list_rooms)
    router.add("GET", V1 + "/rooms/{room_id}", room_details)
    router.add("DELETE", V1 + "/rooms/{room_id}", delete_room_v1)
    router.add("GET", V1 + "/rooms/{room_id}/members", room_members)
    router.add("GET", V1 + "/rooms/{room_id}/state", room_state)
    router.add("GET", V1 + "/rooms/{room_id}/messages", room_messages)
    router.add("GET", V1 + "/rooms/{room_id}/forward_extremities", room_forward_extremities)
    router.add("GET", V1 + "/rooms/{room_id}/block", get_block)
    router.add("PUT", V1 + "/rooms/{room_id}/block", put_block)
    router.add("DELETE", V2 + "/rooms/{room_id}", delete_room_v2)
    router.add("GET", V2 + "/rooms/{room_id}/delete_status", delete_status_by_room)
    router.add("GET", V2 + "/rooms/delete_status/{delete_id}", delete_status)
    router.add("POST", V1 + "/purge_history/{room_id}", purge_history)
    router.add("POST", V1 + "/purge_history/{room_id}/{event_id}", purge_history)
    router.add("GET", V1 + "/purge_history_status/{purge_id}", purge_status)
