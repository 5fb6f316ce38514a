"""Room creation and membership endpoints, and member lists."""
from __future__ import annotations

from client_api.http import Req, Router
from homeserver import visibility
from homeserver.errors import MatrixError, forbidden, missing_param
from homeserver.room_creation import create_room
from homeserver.room_upgrade import upgrade_room
from homeserver.serialize import serialize_event
from storage import state as state_store


async def create_room_handler(req: Req):
    room_id, alias = await create_room(req.hs, req.user_id, req.json(allow_empty=True),
                                       req.requester.app_service)
    result = {"room_id": room_id}
    if alias:
        result["room_alias"] = alias
    return result


def _reason(req: Req) -> str | None:
    reason = req.json(allow_empty=True).get("reason")
    if reason is not None and not isinstance(reason, str):
        raise MatrixError(400, "M_BAD_JSON", "reason must be a string")
    return reason


async def _join_limit(req: Req, **_params: str) -> None:
    # Joins through other servers (federation) count here too; rc_joins.remote is not
    # applied separately yet.
    await req.hs.ratelimiter.check_user(req, "rc_joins_local", req.hs.config.rc_joins.local)


async def join(req: Req, room_id_or_alias: str):
    # `server_name` (and the newer `via`) name servers to join another server's room through.
    servers = req.query_list("server_name") + req.query_list("via")
    room_id = await req.hs.membership.join(req.user_id, room_id_or_alias, _reason(req), servers=servers)
    return {"room_id": room_id}


async def join_by_id(req: Req, room_id: str):
    return await join(req, room_id)


async def knock(req: Req, room_id_or_alias: str):
    # `via` / `server_name` name servers to knock through (another server's room).
    servers = req.query_list("server_name") + req.query_list("via")
    room_id = await req.hs.membership.knock(req.user_id, room_id_or_alias, _reason(req), servers=servers)
    return {"room_id": room_id}


async def upgrade(req: Req, room_id: str):
    return {"replacement_room": await upgrade_room(req.hs, req.user_id, room_id, req.json())}


def _target(req: Req) -> str:
    user_id = req.json().get("user_id")
    if not isinstance(user_id, str):
        raise missing_param("user_id is required")
    return user_id


async def _invite_limit(req: Req, **_params: str) -> None:
    """The inviter's own bucket, where the request enters (the room's and the invitee's
    are the room writer's, in `invite`)."""
    await req.hs.ratelimiter.check_user(req, "rc_invites_per_issuer", req.hs.config.rc_invites.per_issuer)


async def invite(req: Req, room_id: str):
    target = _target(req)
    limits = req.hs.config.rc_invites
    await req.hs.ratelimiter.check_all(req, [
        ("rc_invites_per_room", room_id, limits.per_room, False),
        ("rc_invites_per_user", target, limits.per_user, False)])
    await req.hs.membership.set_membership(req.user_id, room_id, target, "invite", _reason(req))
    return {}


async def leave(req: Req, room_id: str):
    await req.hs.membership.set_membership(req.user_id, room_id, req.user_id, "leave", _reason(req))
    return {}


async def kick(req: Req, room_id: str):
    target = _target(req)
    head = await req.hs.membership.head(room_id, req.user_id)
    if head.membership_of(target) not in ("join", "invite", "knock"):
        raise forbidden("the user is not in the room")
    await req.hs.membership.set_membership(req.user_id, room_id, target, "leave", _reason(req))
    return {}


async def ban(req: Req, room_id: str):
    await req.hs.membership.set_membership(req.user_id, room_id, _target(req), "ban", _reason(req))
    return {}


async def unban(req: Req, room_id: str):
    target = _target(req)
    head = await req.hs.membership.head(room_id, req.user_id)
    if head.membership_of(target) != "ban":
        raise forbidden("the user is not banned")
    await req.hs.membership.set_membership(req.user_id, room_id, target, "leave", _reason(req))
    return {}


async def forget(req: Req, room_id: str):
    head = await req.hs.room_heads.get(room_id)
    if head is not None and head.membership_of(req.user_id) in ("join", "invite", "knock"):
        raise MatrixError(400, "M_UNKNOWN", "leave the room before forgetting it")
    await req.hs.sync.user_rooms.user_forgot(req.user_id, room_id)
    return {}


async def joined_rooms(req: Req):
    return {"joined_rooms": await req.hs.db.run(state_store.rooms_for_user, req.user_id)}


async def members(req: Req, room_id: str):
    hist = await visibility.require_can_read(req.hs, room_id, req.user_id)
    head = await req.hs.membership.head(room_id, req.user_id)
    at = req.query("at")
    membership = req.query("membership")
    not_membership = req.query("not_membership")
    if at is None and head.membership_of(req.user_id) == "join":
        events = [e for k, e in head.state.items() if k[0] == "m.room.member"]
    else:
        # Past members see the members as they were when they left (or at `at`).
        events = await _members_at(req, room_id, at, hist)
    chunk = []
    for ev in events:
        m = ev.membership
        if membership and m != membership:
            continue
        if not_membership and m == not_membership:
            continue
        chunk.append(serialize_event(ev, req.requester.device_key))
    return {"chunk": chunk}


async def _members_at(req: Req, room_id: str, at: str | None, hist) -> list:
    from homeserver.pagination import parse_token  # local import keeps module load light

    position = req.hs.persister.max_stream_ordering
    head = await req.hs.room_heads.get(room_id)
    if head is None or head.membership_of(req.user_id) != "join":
        leave_points = [so for so, m in hist.memberships if m not in ("join", "invite")]
        if leave_points:
            position = leave_points[-1]
    if at is not None:
        position = min(position, parse_token(at)[1])

    def txn(cur):
        cur.execute(
            "SELECT DISTINCT ON (user_id) event_id FROM room_memberships WHERE room_id = %s"
            " AND stream_ordering <= %s ORDER BY user_id, stream_ordering DESC",
            (room_id, position))
        return [r[0] for r in cur.fetchall()]

    ids = await req.hs.db.run(txn)
    found = await req.hs.event_cache.get_many(ids)
    return [found[i] for i in ids if i in found]


async def joined_members(req: Req, room_id: str):
    head = await req.hs.membership.head(room_id, req.user_id)
    if head.membership_of(req.user_id) != "join":
        raise forbidden("you are not in this room")
    joined = {}
    for (etype, user_id), ev in head.state.items():
        if etype == "m.room.member" and ev.membership == "join":
            profile = {"display_name": ev.content.get("displayname"),
                       "avatar_url": ev.content.get("avatar_url")}
            joined[user_id] = {k: v for k, v in profile.items() if isinstance(v, str)}
    return {"joined": joined}


def register(router: Router) -> None:
    router.client("POST", "/createRoom", create_room_handler)
    router.client("POST", "/join/{room_id_or_alias}", join, limit=_join_limit)
    router.client("POST", "/rooms/{room_id}/join", join_by_id, limit=_join_limit)
    router.client("POST", "/knock/{room_id_or_alias}", knock)
    router.client("POST", "/rooms/{room_id}/upgrade", upgrade)
    router.client("POST", "/rooms/{room_id}/invite", invite, limit=_invite_limit)
    router.client("POST", "/rooms/{room_id}/leave", leave)
    router.client("POST", "/rooms/{room_id}/kick", kick)
    router.client("POST", "/rooms/{room_id}/ban", ban)
    router.client("POST", "/rooms/{room_id}/unban", unban)
    router.client("POST", "/rooms/{room_id}/forget", forget)
    router.client("GET", "/joined_rooms", joined_rooms)
    router.client("GET", "/rooms/{room_id}/members", members)
    router.client("GET", "/rooms/{room_id}/joined_members", joined_members)
