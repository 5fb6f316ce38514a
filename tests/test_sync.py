"""/sync with matrix-nio as the client: long-polling, limited timelines and prev_batch,
lazy-loaded members, invite/kick/ban sections, to-device exactly once, presence, and a
server restart mid-session."""
from __future__ import annotations

import asyncio
import time

from nio import AsyncClient, RoomMessagesResponse, SyncResponse, ToDeviceMessage

from tests.server_harness import ServerProcess


async def _client(base_url: str, name: str) -> AsyncClient:
    client = AsyncClient(base_url, name)
    resp = await client.register(name, "pw-" + name)
    assert resp.user_id, resp
    return client


def run(coro):
    return asyncio.run(coro)


async def _room(owner: AsyncClient, *members: AsyncClient, **kwargs) -> str:
    resp = await owner.room_create(invite=[m.user_id for m in members], **kwargs)
    room_id = resp.room_id
    for m in members:
        assert (await m.join(room_id)).room_id == room_id
    return room_id


def test_long_poll_wakes_on_message(server, unique):
    async def main():
        a, b = await _client(server.base_url, unique("a")), await _client(server.base_url, unique("b"))
        room_id = await _room(a, b)
        # Presence changes (a going idle) would also wake the poll: filter them out.
        no_presence = {"presence": {"not_types": ["*"]}}
        first = await b.sync(timeout=0, sync_filter=no_presence)
        assert room_id in first.rooms.join
        poll = asyncio.ensure_future(b.sync(timeout=20_000, since=first.next_batch,
                                            sync_filter=no_presence))
        await asyncio.sleep(0.3)
        assert not poll.done()  # nothing new: the long-poll is waiting
        t0 = time.monotonic()
        sent = await a.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "wake"})
        resp = await poll
        latency = time.monotonic() - t0
        events = resp.rooms.join[room_id].timeline.events
        assert [e.event_id for e in events] == [sent.event_id]
        assert latency < 1.0, latency  # loose: the real figure is the benchmark's
        # An idle long-poll times out with no room updates and a usable token.
        t0 = time.monotonic()
        idle = await b.sync(timeout=500, since=resp.next_batch, sync_filter=no_presence)
        assert 0.45 <= time.monotonic() - t0 < 3.0
        assert room_id not in idle.rooms.join
        await a.close(); await b.close()
    run(main())


def test_a_short_long_poll_times_out_on_time_behind_a_long_one(server, unique):
    """Timeouts share one timer (sync/notifier.py): a long-poll due sooner than every one
    already waiting moves it, and one due later leaves it."""
    async def main():
        a, b = await _client(server.base_url, unique("a")), await _client(server.base_url, unique("b"))
        room_id = await _room(a, b)
        no_presence = {"presence": {"not_types": ["*"]}}
        since = (await b.sync(timeout=0, sync_filter=no_presence)).next_batch
        long_poll = asyncio.ensure_future(b.sync(timeout=30_000, since=since, sync_filter=no_presence))
        await asyncio.sleep(0.3)
        for timeout_ms in (600, 1200):  # the first moves the timer earlier, the second not
            t0 = time.monotonic()
            idle = await a.sync(timeout=timeout_ms, since=(await a.sync(timeout=0, sync_filter=no_presence)).next_batch,
                                sync_filter=no_presence)
            elapsed = time.monotonic() - t0
            assert isinstance(idle, SyncResponse) and room_id not in idle.rooms.join
            assert timeout_ms / 1000 - 0.05 <= elapsed < timeout_ms / 1000 + 1.5, (timeout_ms, elapsed)
        assert not long_poll.done()
        sent = await a.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "done"})
        woken = await asyncio.wait_for(long_poll, 5)
        assert [e.event_id for e in woken.rooms.join[room_id].timeline.events] == [sent.event_id]
        await a.close(); await b.close()
    run(main())


def test_limited_timeline_and_prev_batch(server, unique):
    async def main():
        a, b = await _client(server.base_url, unique("a")), await _client(server.base_url, unique("b"))
        room_id = await _room(a, b)
        first = await b.sync(timeout=0)
        ids = []
        for i in range(15):
            ids.append((await a.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": str(i)})).event_id)
        filt = {"room": {"timeline": {"limit": 5}}}
        resp = await b.sync(timeout=0, since=first.next_batch, sync_filter=filt)
        tl = resp.rooms.join[room_id].timeline
        assert tl.limited is True
        assert [e.event_id for e in tl.events] == ids[-5:]
        back = await b.room_messages(room_id, tl.prev_batch, limit=10)
        assert isinstance(back, RoomMessagesResponse)
        assert [e.event_id for e in back.chunk] == list(reversed(ids[:10]))
        # Not limited when everything fits.
        more = [(await a.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "x"})).event_id
                for _ in range(2)]
        resp2 = await b.sync(timeout=0, since=resp.next_batch, sync_filter=filt)
        tl2 = resp2.rooms.join[room_id].timeline
        assert tl2.limited is False and [e.event_id for e in tl2.events] == more
        await a.close(); await b.close()
    run(main())


def test_lazy_load_members(server, unique):
    async def main():
        a = await _client(server.base_url, unique("a"))
        others = [await _client(server.base_url, unique("m")) for _ in range(4)]
        room_id = await _room(a, *others)
        await others[0].room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "only me"})
        filt = {"room": {"timeline": {"limit": 1}, "state": {"lazy_load_members": True}}}
        viewer = others[1]
        resp = await viewer.sync(timeout=0, sync_filter=filt, full_state=True)
        room = resp.rooms.join[room_id]
        members = {e.state_key for e in room.state if e.source["type"] == "m.room.member"}
        assert members == {others[0].user_id, viewer.user_id}, members
        full = await viewer.sync(timeout=0, full_state=True, sync_filter={"room": {"timeline": {"limit": 1}}})
        all_members = {e.state_key for e in full.rooms.join[room_id].state if e.source["type"] == "m.room.member"}
        assert all_members == {a.user_id} | {o.user_id for o in others}
        for c in [a, *others]:
            await c.close()
    run(main())


def test_invite_kick_ban_sections(server, unique):
    async def main():
        a, b = await _client(server.base_url, unique("a")), await _client(server.base_url, unique("b"))
        base = await b.sync(timeout=0)
        room_id = (await a.room_create(name="sections")).room_id
        await a.room_invite(room_id, b.user_id)
        resp = await b.sync(timeout=0, since=base.next_batch)
        assert room_id in resp.rooms.invite
        invite_state = {e.source["type"] for e in resp.rooms.invite[room_id].invite_state} if hasattr(
            resp.rooms.invite[room_id], "invite_state") else set()
        assert "m.room.name" in invite_state and "m.room.member" in invite_state
        await b.join(room_id)
        resp = await b.sync(timeout=0, since=resp.next_batch)
        assert room_id in resp.rooms.join
        await a.room_kick(room_id, b.user_id, reason="bye")
        resp = await b.sync(timeout=0, since=resp.next_batch)
        assert room_id in resp.rooms.leave
        leave_events = resp.rooms.leave[room_id].timeline.events
        assert leave_events[-1].source["content"]["membership"] == "leave"
        # re-invite, join, then ban
        await a.room_invite(room_id, b.user_id)
        await b.join(room_id)
        resp = await b.sync(timeout=0, since=resp.next_batch)
        await a.room_ban(room_id, b.user_id)
        after_ban = await b.sync(timeout=0, since=resp.next_batch)
        assert room_id in after_ban.rooms.leave
        assert after_ban.rooms.leave[room_id].timeline.events[-1].source["content"]["membership"] == "ban"
        # a message after the ban is not seen by b
        await a.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "secret"})
        later = await b.sync(timeout=0, since=after_ban.next_batch)
        assert room_id not in later.rooms.join and room_id not in later.rooms.leave
        await a.close(); await b.close()
    run(main())


def test_to_device_exactly_once(server, unique):
    async def main():
        a, b = await _client(server.base_url, unique("a")), await _client(server.base_url, unique("b"))
        first = await b.sync(timeout=0)
        msg = ToDeviceMessage("org.example.ping", b.user_id, b.device_id, {"n": 1})
        await a.to_device(msg, tx_id="t1")
        await a.to_device(msg, tx_id="t1")  # a retry of the same transaction: not delivered twice
        resp = await b.sync(timeout=5000, since=first.next_batch)
        got = [e.source for e in resp.to_device_events]
        assert len(got) == 1 and got[0]["content"] == {"n": 1} and got[0]["sender"] == a.user_id
        # Re-using the older token (the client did not acknowledge) delivers it again.
        replay = await b.sync(timeout=0, since=first.next_batch)
        assert [e.source["content"] for e in replay.to_device_events] == [{"n": 1}]
        # Syncing past it acknowledges it: gone for good, even for the old token.
        again = await b.sync(timeout=0, since=replay.next_batch)
        assert again.to_device_events == []
        gone = await b.sync(timeout=0, since=first.next_batch)
        assert gone.to_device_events == []
        await a.close(); await b.close()
    run(main())


def test_presence_online_then_offline(server, unique):
    async def main():
        a, b = await _client(server.base_url, unique("a")), await _client(server.base_url, unique("b"))
        await _room(a, b)
        await a.sync(timeout=0)
        seen = await b.get_presence(a.user_id)
        assert seen.presence == "online", seen
        # a stops syncing: offline after the configured delay (1.5 s in tests)
        deadline = time.time() + 10
        while time.time() < deadline:
            seen = await b.get_presence(a.user_id)
            if seen.presence == "offline":
                break
            await asyncio.sleep(0.5)
        assert seen.presence == "offline"
        # A user who shares no room cannot see a's presence.
        c = await _client(server.base_url, unique("c"))
        resp = await c.get_presence(a.user_id)
        assert getattr(resp, "status_code", None) == "M_FORBIDDEN"
        for x in (a, b, c):
            await x.close()
    run(main())


def test_restart_mid_session_keeps_token(tmp_path):
    srv = ServerProcess(tmp_path / "hs")
    srv.start()

    async def part1():
        a, b = await _client(srv.base_url, "alice"), await _client(srv.base_url, "bob")
        room_id = await _room(a, b)
        await a.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "before"})
        resp = await b.sync(timeout=0)
        return a.access_token, b.access_token, a.user_id, b.user_id, room_id, resp.next_batch

    try:
        ta, tb, ua, ub, room_id, token = run(part1())
        srv.stop()
        srv.start()

        async def part2():
            a = AsyncClient(srv.base_url, ua); a.access_token = ta; a.user_id = ua
            b = AsyncClient(srv.base_url, ub); b.access_token = tb; b.user_id = ub
            sent = [(await a.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": f"after{i}"})).event_id
                    for i in range(3)]
            resp = await b.sync(timeout=0, since=token)
            assert isinstance(resp, SyncResponse), resp
            got = [e.event_id for e in resp.rooms.join[room_id].timeline.events]
            assert got == sent  # nothing lost, nothing repeated
            await a.close(); await b.close()
        run(part2())
    finally:
        srv.stop()
        srv.stop_postgres()


def test_sync_reports_one_time_key_counts(server, http, unique):
    alice = http.register(unique("a"))
    bob = http.register(unique("b"))
    a = type(http)(server.base_url, alice["access_token"])
    b = type(http)(server.base_url, bob["access_token"])
    _, first = a.request("GET", "/_matrix/client/v3/sync?timeout=0")
    assert first["device_one_time_keys_count"].get("signed_curve25519", 0) == 0
    keys = {f"signed_curve25519:k{i}": {"key": f"key{i}", "signatures": {}} for i in range(3)}
    assert a.request("POST", "/_matrix/client/v3/keys/upload", {"one_time_keys": keys})[0] == 200
    _, after_upload = a.request("GET", f"/_matrix/client/v3/sync?timeout=0&since={first['next_batch']}")
    assert after_upload["device_one_time_keys_count"]["signed_curve25519"] == 3
    status, _ = b.request("POST", "/_matrix/client/v3/keys/claim", {
        "one_time_keys": {alice["user_id"]: {alice["device_id"]: "signed_curve25519"}}})
    assert status == 200
    _, after_claim = a.request("GET", f"/_matrix/client/v3/sync?timeout=0&since={after_upload['next_batch']}")
    assert after_claim["device_one_time_keys_count"]["signed_curve25519"] == 2


def test_device_lists_left_when_no_room_is_shared_any_more(server, http, unique):
    alice = http.register(unique("a"))
    bob = http.register(unique("b"))
    a = type(http)(server.base_url, alice["access_token"])
    b = type(http)(server.base_url, bob["access_token"])
    _, room = a.request("POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat"})
    assert b.request("POST", f"/_matrix/client/v3/rooms/{room['room_id']}/join", {})[0] == 200
    _, first = a.request("GET", "/_matrix/client/v3/sync?timeout=0")
    assert b.request("POST", f"/_matrix/client/v3/rooms/{room['room_id']}/leave", {})[0] == 200
    _, after = a.request("GET", f"/_matrix/client/v3/sync?timeout=0&since={first['next_batch']}")
    assert after["device_lists"]["left"] == [bob["user_id"]]
