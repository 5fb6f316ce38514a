"""Deprecated endpoints older bots and tools still use: the event stream (GET /events,
long-polling, lossless paging, history visibility), GET /events/{eventId},
GET /initialSync (limit, archived) and GET /rooms/{roomId}/initialSync, including the
tenant wall (another tenant's event or room looks exactly like a missing one)."""
from __future__ import annotations

import threading
import time
import urllib.parse

from tests.server_harness import Http, ServerProcess, new_user
from tests.tenant_world import create_room, module_world

V3 = "/_matrix/client/v3"
R0 = "/_matrix/client/r0"


world, srv, admin = module_world("legacy")

_n = iter(range(10**6))


def _user(srv: ServerProcess, name: str) -> Http:
    return new_user(srv.base_url, f"{name}{next(_n)}")


def _send(user: Http, room_id: str, body: str) -> str:
    status, sent = user.request("PUT", f"{V3}/rooms/{room_id}/send/m.room.message/t{next(_n)}",
                                {"msgtype": "m.text", "body": body})
    assert status == 200, sent
    return sent["event_id"]


def _join(user: Http, room_id: str) -> None:
    status, body = user.request("POST", f"{V3}/rooms/{room_id}/join", {})
    assert status == 200, body


def _now_token(user: Http) -> str:
    status, body = user.request("GET", f"{V3}/events?timeout=0")
    assert status == 200, body
    return body["end"]


def _events(user: Http, token: str, timeout: int = 0, prefix: str = V3, extra: str = "") -> dict:
    status, body = user.request("GET", f"{prefix}/events?from={urllib.parse.quote(token)}&timeout={timeout}{extra}")
    assert status == 200, body
    return body


def test_event_stream_long_polls_and_is_woken_by_a_message(srv):
    alice, bob = _user(srv, "alice"), _user(srv, "bob")
    room_id = create_room(alice, preset="public_chat")
    _join(bob, room_id)
    token = _now_token(alice)
    result: dict = {}

    def poll():
        started = time.time()
        result["body"] = _events(alice, token, timeout=20000, prefix=R0)
        result["took"] = time.time() - started

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(0.5)
    event_id = _send(bob, room_id, "wake up")
    t.join(30)
    body = result["body"]
    assert result["took"] < 10, "the long-poll was not woken by the message"
    assert body["start"] == token
    [ev] = [e for e in body["chunk"] if e.get("event_id")]
    assert ev["event_id"] == event_id and ev["room_id"] == room_id and ev["content"]["body"] == "wake up"
    # Nothing new after `end`: an empty chunk, and the token stays usable.
    again = _events(alice, body["end"])
    assert again["chunk"] == [] and again["start"] == body["end"]
    # Typing shows up as an event of its room.
    bob.request("PUT", f"{V3}/rooms/{room_id}/typing/{bob.user_id}", {"typing": True, "timeout": 10000})
    typing = [e for e in _events(alice, again["end"], timeout=5000)["chunk"] if e["type"] == "m.typing"]
    assert typing and typing[0]["room_id"] == room_id and bob.user_id in typing[0]["content"]["user_ids"]


def test_event_stream_times_out_empty_and_refuses_bad_tokens(srv):
    alice = _user(srv, "idle")
    create_room(alice)
    token = _now_token(alice)
    started = time.time()
    body = _events(alice, token, timeout=1000)
    assert body["chunk"] == [] and 0.9 <= time.time() - started < 10
    for bad in ("garbage", "t1_2", "s-1"):
        status, err = alice.request("GET", f"{V3}/events?from={bad}&timeout=0")
        assert status == 400 and err["errcode"] == "M_INVALID_PARAM", (bad, err)
    assert Http(srv.base_url).request("GET", f"{V3}/events?timeout=0")[0] == 401


def test_event_stream_pages_a_burst_without_loss_and_filters_by_room(srv):
    alice = _user(srv, "burst")
    busy, quiet = create_room(alice), create_room(alice)
    token = _now_token(alice)
    sent = [_send(alice, busy if i % 10 else quiet, f"m{i}") for i in range(105)]
    first = _events(alice, token)
    second = _events(alice, first["end"])
    got = [e["event_id"] for e in first["chunk"] + second["chunk"] if e.get("event_id")]
    assert len(first["chunk"]) == 100
    assert got == sent  # every event once, in order
    only_quiet = _events(alice, token, extra=f"&room_id={urllib.parse.quote(quiet)}")
    assert {e["room_id"] for e in only_quiet["chunk"]} == {quiet}
    assert [e["event_id"] for e in only_quiet["chunk"]] == sent[::10]
    # A room the user is not in cannot be peeked at through the stream.
    other = create_room(_user(srv, "stranger"), preset="public_chat")
    status, err = alice.request("GET", f"{V3}/events?timeout=0&room_id={urllib.parse.quote(other)}")
    assert status == 403 and err["errcode"] == "M_FORBIDDEN"


def test_event_stream_respects_history_visibility_and_leaving(srv):
    alice, carol = _user(srv, "host"), _user(srv, "guestish")
    room_id = create_room(alice, preset="public_chat",
                    initial_state=[{"type": "m.room.history_visibility", "content": {"history_visibility": "joined"}}])
    token = _now_token(carol)
    before = _send(alice, room_id, "before carol")
    _join(carol, room_id)
    during = _send(alice, room_id, "while carol is in")
    assert carol.request("POST", f"{V3}/rooms/{room_id}/leave", {})[0] == 200
    after = _send(alice, room_id, "after carol left")
    ids = []
    while True:
        body = _events(carol, token)
        if not body["chunk"]:
            break
        ids += [e["event_id"] for e in body["chunk"] if e.get("event_id")]
        token = body["end"]
    assert during in ids and before not in ids and after not in ids


def test_get_event_by_id(srv):
    alice, bob = _user(srv, "evowner"), _user(srv, "evstranger")
    room_id = create_room(alice)
    event_id = _send(alice, room_id, "secret")
    status, ev = alice.request("GET", f"{V3}/events/{urllib.parse.quote(event_id)}")
    assert status == 200 and ev["event_id"] == event_id and ev["room_id"] == room_id
    assert ev["content"]["body"] == "secret"
    missing = bob.request("GET", f"{V3}/events/{urllib.parse.quote('$nothing-here')}")
    assert missing[0] == 404 and missing[1]["errcode"] == "M_NOT_FOUND"
    assert bob.request("GET", f"{V3}/events/{urllib.parse.quote(event_id)}") == missing


def test_initial_sync_snapshot_limit_and_archived(srv):
    alice, bob = _user(srv, "snap"), _user(srv, "snapper")
    joined = create_room(alice, name="joined room", preset="public_chat", visibility="public")
    for i in range(5):
        _send(alice, joined, f"msg{i}")
    left = create_room(bob, preset="public_chat")
    _join(alice, left)
    last_seen = _send(bob, left, "seen before leaving")
    assert alice.request("POST", f"{V3}/rooms/{left}/leave", {})[0] == 200
    unseen = _send(bob, left, "after leaving")
    invited = create_room(bob, invite=[alice.user_id])
    alice.request("PUT", f"{V3}/user/{alice.user_id}/account_data/org.example.cfg", {"k": "v"})

    status, snap = alice.request("GET", f"{V3}/initialSync?limit=3")
    assert status == 200, snap
    rooms = {r["room_id"]: r for r in snap["rooms"]}
    assert set(rooms) == {joined, invited}
    j = rooms[joined]
    assert j["membership"] == "join" and j["visibility"] == "public"
    assert [e["content"]["body"] for e in j["messages"]["chunk"]] == ["msg2", "msg3", "msg4"]
    assert all(e["room_id"] == joined for e in j["messages"]["chunk"] + j["state"])
    state_types = {e["type"] for e in j["state"]}
    assert {"m.room.create", "m.room.member", "m.room.name", "m.room.power_levels"} <= state_types
    # The messages' start token pages back with /messages.
    status, page = alice.request("GET", f"{V3}/rooms/{joined}/messages?dir=b&limit=2&from={j['messages']['start']}")
    assert status == 200 and [e["content"]["body"] for e in page["chunk"]] == ["msg1", "msg0"]
    inv = rooms[invited]
    assert inv["membership"] == "invite" and inv["invite"]["state_key"] == alice.user_id
    assert {"type": "org.example.cfg", "content": {"k": "v"}} in snap["account_data"]
    assert isinstance(snap["presence"], list)

    status, archived = alice.request("GET", f"{V3}/initialSync?archived=true&limit=10")
    assert status == 200
    rooms = {r["room_id"]: r for r in archived["rooms"]}
    assert rooms[left]["membership"] == "leave"
    ids = [e["event_id"] for e in rooms[left]["messages"]["chunk"]]
    assert last_seen in ids and unseen not in ids
    me = [e for e in rooms[left]["state"] if e["type"] == "m.room.member" and e["state_key"] == alice.user_id]
    assert me[0]["content"]["membership"] == "leave"  # the state as it was when alice left

    # `end` continues as an event stream.
    new = _send(alice, joined, "after the snapshot")
    assert new in [e.get("event_id") for e in _events(alice, snap["end"], timeout=5000)["chunk"]]
    for bad in ("limit=-1", "limit=x", "archived=maybe"):
        status, err = alice.request("GET", f"{V3}/initialSync?{bad}")
        assert status == 400 and err["errcode"] == "M_INVALID_PARAM", bad


def test_room_initial_sync_for_members_past_members_and_peekers(srv):
    alice, bob, peeker = _user(srv, "rsa"), _user(srv, "rsb"), _user(srv, "rsc")
    room_id = create_room(alice, preset="public_chat", name="room snap")
    _join(bob, room_id)
    _send(alice, room_id, "one")
    assert bob.request("POST", f"{V3}/rooms/{room_id}/leave", {})[0] == 200
    _send(alice, room_id, "two")

    status, snap = alice.request("GET", f"{V3}/rooms/{room_id}/initialSync?limit=1")
    assert status == 200, snap
    assert snap["room_id"] == room_id and snap["membership"] == "join"
    assert [e["content"]["body"] for e in snap["messages"]["chunk"]] == ["two"]
    status, snap = bob.request("GET", f"{V3}/rooms/{room_id}/initialSync")
    assert status == 200 and snap["membership"] == "leave"
    assert "two" not in [e["content"].get("body") for e in snap["messages"]["chunk"]]
    assert "one" in [e["content"].get("body") for e in snap["messages"]["chunk"]]
    # Never a member of a room that is not world-readable: refused like an unknown room.
    refused = peeker.request("GET", f"{V3}/rooms/{room_id}/initialSync")
    assert refused[0] == 403 and refused[1]["errcode"] == "M_FORBIDDEN"
    assert peeker.request("GET", f"{V3}/rooms/%21unknown%3Atest.local/initialSync") == refused
    # A world-readable room can be peeked at.
    open_room = create_room(alice, preset="public_chat", initial_state=[
        {"type": "m.room.history_visibility", "content": {"history_visibility": "world_readable"}}])
    _send(alice, open_room, "for everyone")
    status, snap = peeker.request("GET", f"{V3}/rooms/{open_room}/initialSync")
    assert status == 200 and "membership" not in snap
    assert [e["content"]["body"] for e in snap["messages"]["chunk"] if e["type"] == "m.room.message"] == ["for everyone"]


def test_another_tenants_event_and_room_look_like_missing_ones(srv, admin):
    acme, outsider = _user(srv, "acme"), _user(srv, "outsider")
    status, body = admin.request("PUT", f"/_homeserver/admin/v1/users/{acme.user_id}/tenant", {"tenant_id": "acme"})
    assert status == 200, body
    room_id = create_room(acme, preset="public_chat", initial_state=[
        {"type": "m.room.history_visibility", "content": {"history_visibility": "world_readable"}}])
    event_id = _send(acme, room_id, "acme only")
    assert acme.request("GET", f"{V3}/events/{urllib.parse.quote(event_id)}")[0] == 200
    assert acme.request("GET", f"{V3}/rooms/{room_id}/initialSync")[0] == 200
    # World-readable or not, for another organization they do not exist.
    assert outsider.request("GET", f"{V3}/events/{urllib.parse.quote(event_id)}") == \
        outsider.request("GET", f"{V3}/events/{urllib.parse.quote('$missing')}")
    assert outsider.request("GET", f"{V3}/rooms/{room_id}/initialSync") == \
        outsider.request("GET", f"{V3}/rooms/%21missing%3Atest.local/initialSync")
    status, err = outsider.request("GET", f"{V3}/events?timeout=0&room_id={urllib.parse.quote(room_id)}")
    assert (status, err) == outsider.request("GET", f"{V3}/events?timeout=0&room_id=%21missing%3Atest.local")
