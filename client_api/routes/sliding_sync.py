"""Simplified sliding sync (MSC4186) on Synapse's unstable path, POST only (as Synapse):
see docs/sliding-sync.md."""
from __future__ import annotations

from client_api.http import Req, Router
from client_api.routes.sync import MAX_SYNC_TIMEOUT_MS
from homeserver.errors import MatrixError
from sync.sliding_request import parse_request

PATH = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"


async def sliding_sync(req: Req):
    body = req.json()
    parsed = parse_request(body)
    pos = req.query("pos")
    if pos is None and isinstance(body.get("pos"), str):
        pos = body["pos"]  # the MSC's newer text moves pos and timeout into the body
    timeout = req.query_int("timeout")
    if timeout is None:
        raw = body.get("timeout", 0)
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise MatrixError(400, "M_INVALID_PARAM", "timeout must be an integer")
        timeout = raw
    timeout = min(max(timeout, 0), MAX_SYNC_TIMEOUT_MS)
    activity = req.hs.push.activity  # pushers leave a user who is syncing in peace
    activity.started(req.user_id)
    try:
        return await req.hs.sync.sliding.sync(req.user_id, req.requester.device_id, parsed, pos, timeout)
    finally:
        activity.finished(req.user_id)


def register(router: Router) -> None:
    router.add("POST", PATH, sliding_sync)
