"""Room events over federation: transactions in (`send`), and events, state, auth chains,
backfill and missing events out, each only to a server that may see them (a member in the
room; history visibility for servers)."""
from __future__ import annotations

import time

from client_api.http import Req, Router
from federation_api.auth import authenticate_origin
from homeserver.errors import bad_json, forbidden, missing_param, not_found
from homeserver.federation.acl import server_allowed
from homeserver.room_heads import RoomHead

F1 = "/_matrix/federation/v1"
TRANSACTION_BODY_LIMIT = 8 * 1024 * 1024
MAX_BACKFILL = 100
MAX_MISSING = 20


def _now() -> int:
    return int(time.time() * 1000)


async def send_transaction(req: Req, txn_id: str):
    origin = await authenticate_origin(req)
    body = req.json()
    pdus, edus = body.get("pdus", []), body.get("edus", [])
    if not isinstance(pdus, list) or not isinstance(edus, list):
        raise bad_json("pdus and edus must be lists")
    if len(pdus) > 50 or len(edus) > 100:
        raise bad_json("a transaction holds at most 50 PDUs and 100 EDUs")
    return await req.hs.federation.transactions.on_send(origin, txn_id, body)


async def _room(req: Req, room_id: str, origin: str) -> RoomHead:
    """The room, if `origin` has a member in it and passes its server ACL."""
    federation = req.hs.federation
    head = await federation.exposure.room_for(room_id, origin)
    if head is None:
        raise forbidden("your server is not in this room")
    if not server_allowed(origin, federation.inbound.acl_of(head)):
        raise forbidden("your server is denied by the room's server ACL")
    return head


async def get_event(req: Req, event_id: str):
    origin = await authenticate_origin(req)
    federation = req.hs.federation
    ev = await req.hs.event_cache.get(event_id)
    head = await federation.exposure.room_for(ev.room_id, origin, member_required=False) if ev else None
    if ev is None or head is None or not await federation.exposure.may_see_event(origin, head, event_id):
        raise not_found("event not found")
    return {"origin": req.hs.server_name, "origin_server_ts": _now(),
            "pdus": [federation.serving.pdu(ev)]}


def _event_id_param(req: Req) -> str:
    event_id = req.query("event_id")
    if not event_id:
        raise missing_param("event_id is required")
    return event_id


async def get_state(req: Req, room_id: str):
    origin = await authenticate_origin(req)
    head = await _room(req, room_id, origin)
    state, chain = await req.hs.federation.serving.state_at(head, _event_id_param(req), origin)
    serving = req.hs.federation.serving
    return {"pdus": [serving.pdu(e) for e in state], "auth_chain": [serving.pdu(e) for e in chain]}


async def get_state_ids(req: Req, room_id: str):
    origin = await authenticate_origin(req)
    head = await _room(req, room_id, origin)
    state, chain = await req.hs.federation.serving.state_at(head, _event_id_param(req), origin)
    return {"pdu_ids": [e.event_id for e in state], "auth_chain_ids": [e.event_id for e in chain]}


async def get_event_auth(req: Req, room_id: str, event_id: str):
    origin = await authenticate_origin(req)
    head = await _room(req, room_id, origin)
    serving = req.hs.federation.serving
    if not await req.hs.federation.exposure.may_see_event(origin, head, event_id):
        raise not_found("event not found")
    chain = await serving.auth_chain(head, [event_id])
    return {"auth_chain": [serving.pdu(e) for e in chain]}


async def backfill(req: Req, room_id: str):
    origin = await authenticate_origin(req)
    head = await _room(req, room_id, origin)
    starts = req.query_list("v")
    if not starts:
        raise missing_param("v (the events to start from) is required")
    limit = max(0, min(req.query_int("limit", 10) or 0, MAX_BACKFILL))
    serving = req.hs.federation.serving
    events = await serving.walk_back(head, starts, limit, set(), 0, origin, include_start=True)
    return {"origin": req.hs.server_name, "origin_server_ts": _now(),
            "pdus": [serving.pdu(e) for e in events]}


async def get_missing_events(req: Req, room_id: str):
    origin = await authenticate_origin(req)
    head = await _room(req, room_id, origin)
    body = req.json()
    earliest, latest = body.get("earliest_events", []), body.get("latest_events")
    limit, min_depth = body.get("limit", 10), body.get("min_depth", 0)
    if not isinstance(latest, list) or not isinstance(earliest, list) \
            or not all(isinstance(e, str) for e in earliest + latest):
        raise bad_json("earliest_events and latest_events must be lists of event ids")
    if not isinstance(limit, int) or not isinstance(min_depth, int):
        raise bad_json("limit and min_depth must be integers")
    serving = req.hs.federation.serving
    events = await serving.walk_back(head, latest, max(0, min(limit, MAX_MISSING)), set(earliest),
                                     min_depth, origin, include_start=False)
    events.reverse()  # oldest first
    return {"events": [serving.pdu(e) for e in events]}


def register(router: Router) -> None:
    router.add("PUT", F1 + "/send/{txn_id}", send_transaction, auth=False, max_body=TRANSACTION_BODY_LIMIT)
    router.add("GET", F1 + "/event/{event_id}", get_event, auth=False)
    router.add("GET", F1 + "/state/{room_id}", get_state, auth=False)
    router.add("GET", F1 + "/state_ids/{room_id}", get_state_ids, auth=False)
    router.add("GET", F1 + "/event_auth/{room_id}/{event_id}", get_event_auth, auth=False)
    router.add("GET", F1 + "/backfill/{room_id}", backfill, auth=False)
    router.add("POST", F1 + "/get_missing_events/{room_id}", get_missing_events, auth=False)
