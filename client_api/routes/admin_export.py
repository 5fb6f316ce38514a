"""Data export (`/_homeserver/admin/v1`): a room's whole history, and everything the
server holds about a user (what a GDPR access request asks for), streamed as JSON lines
(`application/x-ndjson`), page by page, never built in memory. Server admins export
anything; tenant admins their tenant's rooms and users (others answer 404 like missing
ones). Every export is audited.

Each line is an object with a `kind`: `room` (the header of a room export), `profile`,
`device` (no tokens, no keys), `account_data`, `membership`, and `event` (an event in the
client format, redacted where redacted)."""
from __future__ import annotations

import time
from typing import Any, AsyncIterator, Callable

from client_api.admin_auth import origin_of, require_admin
from client_api.http import Req, Router
from client_api.routes.admin import ADMIN_PREFIX
from client_api.streaming import JsonLines
from homeserver.event_cache import event_from_stored
from homeserver.serialize import serialize_event
from storage import events as events_store
from storage import export as export_store

PAGE = 500


async def _event_lines(req: Req, read_page: Callable, key: str) -> AsyncIterator[list[dict]]:
    """Pages of `event` lines from `read_page(cur, key, after, limit)`."""
    after = 0
    versions: dict[str, str] = {}
    while True:
        rows = await req.hs.db.run(read_page, key, after, PAGE)
        if not rows:
            return
        after = rows[-1][1].stream_ordering
        missing = list({room for room, _ in rows if room not in versions})
        if missing:
            versions.update(await req.hs.db.run(export_store.room_versions, missing))
        redaction_ids = [st.redacted_by for _, st in rows if st.redacted_by]
        redactions = await req.hs.db.run(events_store.get_events, redaction_ids) if redaction_ids else {}
        lines = []
        for room_id, st in rows:
            version = versions.get(room_id, "10")
            redaction = redactions.get(st.redacted_by or "")
            ev = event_from_stored(st, version)
            lines.append({"kind": "event", "event": serialize_event(
                ev, None, event_from_stored(redaction, version) if redaction else None)})
        yield lines


async def export_room(req: Req, room_id: str):
    scope = await require_admin(req)
    tenant = await scope.room(req, room_id)
    head = await req.hs.room_heads.get(room_id)
    await req.hs.audit.record("export.room", origin_of(req), target_room=room_id, tenant_id=tenant)

    async def pages() -> AsyncIterator[list[Any]]:
        yield [{"kind": "room", "room_id": room_id, "room_version": head.room_version.identifier if head else None,
                "tenant_id": tenant, "exported_ts": int(time.time() * 1000)}]
        async for page in _event_lines(req, export_store.room_events_page, room_id):
            yield page

    return JsonLines(pages(), filename="room-export.jsonl")


async def export_user(req: Req, user_id: str):
    scope = await require_admin(req)
    await scope.user(req, user_id)
    await req.hs.audit.record("export.user", origin_of(req), target_user=user_id)

    async def pages() -> AsyncIterator[list[Any]]:
        data = await req.hs.db.run(export_store.user_data, user_id)
        yield [{"kind": "profile", **data["profile"], "exported_ts": int(time.time() * 1000)}]
        yield [{"kind": "device", **d} for d in data["devices"]]
        yield [{"kind": "account_data", **a} for a in data["account_data"]]
        yield [{"kind": "membership", **r} for r in data["rooms"]]
        async for page in _event_lines(req, export_store.user_events_page, user_id):
            yield page

    return JsonLines(pages(), filename="user-export.jsonl")


def register(router: Router) -> None:
    router.add("GET", ADMIN_PREFIX + "/rooms/{room_id}/export", export_room)
    router.add("GET", ADMIN_PREFIX + "/users/{user_id}/export", export_user)
