"""Unread counts as matrix-nio sees them (MatrixRoom.unread_notifications and
unread_highlights, RoomInfo.unread_thread_notifications), with nio's own calls: sending,
an intentional mention, Element-style mutes set through nio's push-rule API, nio's read
receipts (threaded "main" by default) and a threaded receipt."""
from __future__ import annotations

import asyncio

from nio import AsyncClient, RoomSendResponse, SyncResponse
from nio.api import PushRuleKind
from nio.events.account_data import PushDontNotify, PushEventMatch

from tests.e2e.test_nio_flows import new_user

THREADS = {"room": {"timeline": {"unread_thread_notifications": True}}}


async def _send(client: AsyncClient, room_id: str, body: str, **extra) -> str:
    r = await client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body, **extra})
    assert isinstance(r, RoomSendResponse), r
    return r.event_id


async def _sync(client: AsyncClient, **kw) -> SyncResponse:
    r = await client.sync(timeout=0, **kw)
    assert isinstance(r, SyncResponse), r
    return r


async def _room_pair(a: AsyncClient, b: AsyncClient, c: AsyncClient | None = None) -> str:
    invite = [b.user_id] + ([c.user_id] if c else [])
    r = await a.room_create(invite=invite)
    room_id = r.room_id
    for x in [b] + ([c] if c else []):
        await x.join(room_id)
    await _sync(a)
    await _sync(b)
    return room_id


def test_nio_counts_mentions_and_receipts(server, unique):
    async def main() -> None:
        a, b, c = [await new_user(server.base_url, unique(p)) for p in ("na", "nb", "nc")]
        try:
            room_id = await _room_pair(a, b, c)
            await _send(a, room_id, "one")
            await _send(a, room_id, "two")
            await _sync(b)
            room = b.rooms[room_id]
            assert (room.unread_notifications, room.unread_highlights) == (2, 0)
            last = await _send(a, room_id, "look", **{"m.mentions": {"user_ids": [b.user_id]}})
            await _sync(b)
            assert (room.unread_notifications, room.unread_highlights) == (3, 1)
            # nio's receipt is threaded "main" by default: the main timeline is read.
            r = await b.update_receipt_marker(room_id, last)
            assert not hasattr(r, "status_code") or r.status_code is None, r
            await _sync(b)
            assert (room.unread_notifications, room.unread_highlights) == (0, 0)
            # A read marker (unthreaded m.read) resets too.
            await _send(a, room_id, "again")
            await _sync(b)
            assert room.unread_notifications == 1
            again = await _send(a, room_id, "and again")
            await b.room_read_markers(room_id, again, again)
            await _sync(b)
            assert room.unread_notifications == 0
        finally:
            for x in (a, b, c):
                await x.close()

    asyncio.run(main())


def test_nio_muted_room_and_threads(server, unique):
    async def main() -> None:
        a, b = [await new_user(server.base_url, unique(p)) for p in ("ma", "mb")]
        try:
            muted = await _room_pair(a, b)
            loud = await _room_pair(a, b)
            # Element's mute: an override rule named after the room, matching its id.
            r = await b.set_pushrule("global", PushRuleKind.override, muted, actions=[PushDontNotify()],
                                     conditions=[PushEventMatch("room_id", muted)])
            assert type(r).__name__ == "SetPushRuleResponse", r
            await _send(a, muted, "shh")
            await _send(a, muted, "shh", **{"m.mentions": {"user_ids": [b.user_id]}})
            root = await _send(a, loud, "root")
            thread = {"m.relates_to": {"rel_type": "m.thread", "event_id": root}}
            await _send(a, loud, "reply 1", **thread)
            reply2 = await _send(a, loud, "reply 2", **thread)
            resp = await _sync(b, sync_filter=THREADS)
            assert (b.rooms[muted].unread_notifications, b.rooms[muted].unread_highlights) == (0, 0)
            info = resp.rooms.join[loud]
            assert info.unread_notifications.notification_count == 1
            assert info.unread_thread_notifications[root].notification_count == 2
            # A threaded receipt reads the thread, not the main timeline.
            await b.update_receipt_marker(loud, reply2, thread_id=root)
            resp = await _sync(b, sync_filter=THREADS)
            info = resp.rooms.join[loud]
            assert info.unread_notifications.notification_count == 1
            assert root not in (info.unread_thread_notifications or {})
        finally:
            for x in (a, b):
                await x.close()

    asyncio.run(main())
