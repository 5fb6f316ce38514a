"""Membership handshakes with other servers: make/send join, leave and knock, and invites
of this server's users."""
from __future__ import annotations

from client_api.http import Req, Router
from federation_api.auth import authenticate_origin

F1 = "/_matrix/federation/v1"
F2 = "/_matrix/federation/v2"
BODY_LIMIT = 1024 * 1024


def _make(membership: str):
    async def handler(req: Req, room_id: str, user_id: str):
        origin = await authenticate_origin(req)
        versions = (req.query_list("ver") or None) if membership != "leave" else None
        return await req.hs.federation.membership.make(origin, room_id, user_id, membership, versions)
    return handler


def _send(membership: str, v1: bool):
    async def handler(req: Req, room_id: str, event_id: str):
        origin = await authenticate_origin(req)
        result = await req.hs.federation.membership.send(origin, room_id, event_id, req.json(), membership)
        return [200, result] if v1 else result
    return handler


async def invite_v2(req: Req, room_id: str, event_id: str):
    origin = await authenticate_origin(req)
    return await req.hs.federation.membership.on_invite(origin, room_id, event_id, req.json())


async def invite_v1(req: Req, room_id: str, event_id: str):
    origin = await authenticate_origin(req)
    body = {"room_version": "1", "event": req.json(), "invite_room_state":
            (req.json().get("unsigned") or {}).get("invite_room_state", [])}
    return [200, await req.hs.federation.membership.on_invite(origin, room_id, event_id, body)]


def register(router: Router) -> None:
    for membership in ("join", "leave", "knock"):
        router.add("GET", f"{F1}/make_{membership}/{{room_id}}/{{user_id}}", _make(membership), auth=False)
    router.add("PUT", F2 + "/send_join/{room_id}/{event_id}", _send("join", False), auth=False, max_body=BODY_LIMIT)
    router.add("PUT", F1 + "/send_join/{room_id}/{event_id}", _send("join", True), auth=False, max_body=BODY_LIMIT)
    router.add("PUT", F2 + "/send_leave/{room_id}/{event_id}", _send("leave", False), auth=False)
    router.add("PUT", F1 + "/send_leave/{room_id}/{event_id}", _send("leave", True), auth=False)
    router.add("PUT", F1 + "/send_knock/{room_id}/{event_id}", _send("knock", False), auth=False)
    router.add("PUT", F2 + "/invite/{room_id}/{event_id}", invite_v2, auth=False, max_body=BODY_LIMIT)
    router.add("PUT", F1 + "/invite/{room_id}/{event_id}", invite_v1, auth=False, max_body=BODY_LIMIT)
