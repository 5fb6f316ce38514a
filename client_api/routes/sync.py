"""GET /sync and the ephemeral endpoints: typing, receipts, read markers, presence,
to-device."""
from __future__ import annotations

from client_api.http import Req, Router, parse_json_body
from client_api.routes.room_events import check_txn_id
from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.filtering import Filter
from homeserver.lru import LRU
from storage import account_data as account_data_store

MAX_SYNC_TIMEOUT_MS = 300_000
_NO_FILTER = Filter()
# Parsed filters: a client sends the same one with every /sync (inline, or the id of a
# stored filter, which never changes once created), so a re-poll neither parses JSON nor
# reads the database. Keyed by user for stored ids (ids are per user).
_filters: LRU[tuple[str, str], Filter] = LRU(20_000)


async def _load_filter(req: Req, raw: str | None) -> Filter:
    if not raw:
        return _NO_FILTER
    inline = raw.lstrip().startswith("{")
    key = ("", raw) if inline else (req.user_id, raw)
    cached = _filters.get(key)
    if cached is not None:
        return cached
    if inline:
        try:
            parsed = Filter.parse(parse_json_body(raw.encode("utf-8")))
        except MatrixError:
            raise MatrixError(400, "M_INVALID_PARAM", "filter is not valid JSON") from None
    else:
        if not (raw.isascii() and raw.isdigit()):
            raise MatrixError(400, "M_INVALID_PARAM", "filter must be a filter id or JSON")
        stored = await req.hs.db.run(account_data_store.get_filter, req.user_id, int(raw))
        if stored is None:
            raise MatrixError(400, "M_INVALID_PARAM", f"no filter with id {raw}")
        parsed = Filter.parse(stored)
    _filters.put(key, parsed)
    return parsed


async def sync(req: Req):
    timeout = min(max(req.query_int("timeout", 0) or 0, 0), MAX_SYNC_TIMEOUT_MS)
    set_presence = req.query("set_presence")
    if set_presence not in (None, "online", "offline", "unavailable"):
        raise MatrixError(400, "M_INVALID_PARAM", "set_presence must be online, offline or unavailable")
    full_state = req.query("full_state", "false") == "true"
    filt = await _load_filter(req, req.query("filter"))
    activity = req.hs.push.activity  # pushers leave a user who is syncing in peace
    activity.started(req.user_id)
    try:
        return await req.hs.sync.handler.sync(req.user_id, req.requester.device_id, req.query("since"),
                                              timeout, full_state, filt, set_presence)
    finally:
        activity.finished(req.user_id)


async def _joined_head(req: Req, room_id: str):
    head = await req.hs.tenancy.head_for(req.user_id, room_id)
    if head is None:
        raise not_found("unknown room")
    if head.membership_of(req.user_id) != "join":
        raise forbidden("you are not in this room")
    return head


async def typing(req: Req, room_id: str, user_id: str):
    if user_id != req.user_id:
        raise forbidden("you may only set your own typing state")
    body = req.json()
    is_typing = body.get("typing")
    if not isinstance(is_typing, bool):
        raise MatrixError(400, "M_BAD_JSON", "typing must be a boolean")
    timeout = body.get("timeout", 30_000)
    if is_typing and (not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0):
        raise MatrixError(400, "M_BAD_JSON", "timeout must be a non-negative integer")
    await _joined_head(req, room_id)
    req.hs.sync.typing.set_typing(room_id, user_id, is_typing, timeout if is_typing else 0)
    return {}


async def _check_receipt_target(req: Req, room_id: str, event_id: str) -> None:
    await _joined_head(req, room_id)
    ev = await req.hs.event_cache.get(event_id)
    if ev is None or ev.room_id != room_id:
        raise not_found("event not found in this room")


async def receipt(req: Req, room_id: str, receipt_type: str, event_id: str):
    if receipt_type not in ("m.read", "m.read.private", "m.fully_read"):
        raise MatrixError(400, "M_INVALID_PARAM", f"unknown receipt type {receipt_type}")
    body = req.json(allow_empty=True)
    thread_id = body.get("thread_id")
    # null counts as absent (unthreaded): matrix-nio sends it for an unthreaded receipt.
    if thread_id is not None and (not isinstance(thread_id, str) or not thread_id):
        raise MatrixError(400, "M_INVALID_PARAM", "thread_id must be a non-empty string")
    if thread_id is not None and receipt_type == "m.fully_read":
        raise MatrixError(400, "M_INVALID_PARAM", "thread_id is not compatible with m.fully_read")
    await _check_receipt_target(req, room_id, event_id)
    if receipt_type == "m.fully_read":
        await req.hs.sync.account_data.put(req.user_id, room_id, "m.fully_read", {"event_id": event_id})
        return {}
    if thread_id is not None and not await req.hs.relations.receipt_thread_ok(event_id, thread_id):
        raise MatrixError(400, "M_INVALID_PARAM", f"event {event_id} is not in thread {thread_id}")
    await req.hs.sync.receipts.put(room_id, receipt_type, req.user_id, event_id, thread_id)
    return {}


async def read_markers(req: Req, room_id: str):
    body = req.json()
    for key in ("m.fully_read", "m.read", "m.read.private"):
        value = body.get(key)
        if value is not None and not isinstance(value, str):
            raise MatrixError(400, "M_BAD_JSON", f"{key} must be an event id")
    for key in ("m.read", "m.read.private"):
        if body.get(key):
            await _check_receipt_target(req, room_id, body[key])
            await req.hs.sync.receipts.put(room_id, key, req.user_id, body[key], None)
    if body.get("m.fully_read"):
        await _check_receipt_target(req, room_id, body["m.fully_read"])
        await req.hs.sync.account_data.put(req.user_id, room_id, "m.fully_read",
                                           {"event_id": body["m.fully_read"]})
    return {}


async def _shares_room(req: Req, user_id: str) -> bool:
    engine = req.hs.sync
    if engine.shares_room(req.user_id, user_id):
        return True
    # With several processes the one keeping presence may not have the asker's rooms in
    # memory: load them.
    return req.hs.replication is not None and bool(await engine.sharing_among(req.user_id, {user_id}))


async def get_presence(req: Req, user_id: str):
    if not req.hs.config.presence.enabled:
        raise forbidden("presence is disabled on this server")
    if user_id != req.user_id and (not await _shares_room(req, user_id)
                                   or not await req.hs.tenancy.visible_users(req.user_id, [user_id])):
        raise forbidden("you do not share a room with this user")
    if req.hs.accounts.is_mine(user_id) and not await req.hs.db.run(_user_exists, user_id):
        raise not_found("unknown user")  # (another server's user: known from a shared room)
    return req.hs.sync.presence.event_for(user_id)["content"]


def _user_exists(cur, user_id: str) -> bool:
    cur.execute("SELECT 1 FROM users WHERE user_id = %s", (user_id,))
    return cur.fetchone() is not None


async def set_presence(req: Req, user_id: str):
    if user_id != req.user_id:
        raise forbidden("you may only set your own presence")
    body = req.json()
    state = body.get("presence")
    if state not in ("online", "offline", "unavailable"):
        raise MatrixError(400, "M_INVALID_PARAM", "presence must be online, offline or unavailable")
    status_msg = body.get("status_msg")
    if status_msg is not None and (not isinstance(status_msg, str) or "\x00" in status_msg):
        raise MatrixError(400, "M_BAD_JSON", "status_msg must be a string without NUL")
    if req.hs.config.presence.enabled:
        req.hs.sync.presence.set_status(user_id, state, status_msg)
    return {}


async def send_to_device(req: Req, event_type: str, txn_id: str):
    check_txn_id(txn_id)
    body = req.json()
    await req.hs.sync.to_device.send(req.user_id, req.requester.device_id, event_type, txn_id,
                                     body.get("messages"))
    return {}


def register(router: Router) -> None:
    router.client("GET", "/sync", sync)
    router.client("PUT", "/rooms/{room_id}/typing/{user_id}", typing)
    router.client("POST", "/rooms/{room_id}/receipt/{receipt_type}/{event_id}", receipt)
    router.client("POST", "/rooms/{room_id}/read_markers", read_markers)
    router.client("GET", "/presence/{user_id}/status", get_presence)
    router.client("PUT", "/presence/{user_id}/status", set_presence)
    router.client("PUT", "/sendToDevice/{event_type}/{txn_id}", send_to_device)
