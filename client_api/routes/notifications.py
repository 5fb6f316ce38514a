"""Push notifications: GET /notifications (what the user was notified of), and the
user's pushers (GET /pushers, POST /pushers/set)."""
from __future__ import annotations

from client_api.http import Req, Router
from client_api.routes.room_events import serialize_for
from homeserver.accounts import hash_token
from homeserver.errors import invalid_param
from storage import push as push_store

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


async def get_notifications(req: Req):
    raw_from = req.query("from")
    if raw_from is not None and not (raw_from.isascii() and raw_from.isdigit() and len(raw_from) < 19):
        raise invalid_param("from must be a next_token from an earlier answer")
    limit = req.query_int("limit", DEFAULT_LIMIT)
    if limit is None or limit < 1:
        raise invalid_param("limit must be a positive integer")
    limit = min(limit, MAX_LIMIT)
    only = req.query("only")
    if only not in (None, "highlight"):
        raise invalid_param("only must be highlight")
    user_id = req.user_id
    rows = await req.hs.db.run(push_store.notifications, user_id,
                               int(raw_from) if raw_from is not None else None, limit, only == "highlight")
    counts = req.hs.push.counts
    await counts.ensure_loaded(user_id)
    found = await req.hs.event_cache.get_many([r.event_id for r in rows])
    present = [r for r in rows if r.event_id in found]
    events = await serialize_for(req, [found[r.event_id] for r in present])
    notifications = [{
        "actions": r.actions, "event": ev, "read": r.stream_ordering <= counts.read_position(
            user_id, r.room_id, r.thread_id), "room_id": r.room_id, "ts": r.received_ts,
    } for r, ev in zip(present, events)]
    out: dict = {"notifications": notifications}
    if len(rows) == limit:
        out["next_token"] = str(rows[-1].stream_ordering)
    return out


async def get_pushers(req: Req):
    return {"pushers": await req.hs.pushers.pushers_of(req.user_id)}


async def set_pusher(req: Req):
    requester = req.requester
    token_hash = None if requester.app_service is not None else hash_token(requester.access_token)
    await req.hs.pushers.set(req.user_id, token_hash, req.json())
    return {}


def register(router: Router) -> None:
    router.client("GET", "/notifications", get_notifications)
    router.client("GET", "/pushers", get_pushers)
    router.client("POST", "/pushers/set", set_pusher)
