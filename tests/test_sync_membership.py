"""/sync and the syncing user's own membership: a display-name change is one state change
(not a new join), a room joined and left between two syncs comes in `rooms.leave` with its
state, and a newly joined room's timeline is `limited` unless it starts at the room's
creation. Over real HTTP against a real server."""
from __future__ import annotations

from tests.server_harness import ServerProcess
from tests.sync_client import User, timeline_ids

NO_PRESENCE = {"presence": {"not_types": ["*"]}}


def test_display_name_change_is_one_state_change(server, unique):
    a = User.register(server.base_url, unique("a"))
    b = User.register(server.base_url, unique("b"))
    room_id = a.create_room(preset="public_chat", name="names")
    b.join(room_id)
    token = b.sync(filt=NO_PRESENCE)["next_batch"]
    change_id = b.set_displayname(room_id, "Bee")
    resp = b.sync(since=token, filt=NO_PRESENCE)
    room = resp["rooms"]["join"][room_id]
    # Only the change itself: not resent from m.room.create as if newly joined.
    assert timeline_ids(room) == [change_id]
    assert room["timeline"]["limited"] is False
    assert room["state"]["events"] == []
    # The other member sees the same single change.
    a_token = a.sync(filt=NO_PRESENCE)["next_batch"]
    second = b.set_displayname(room_id, "Bee 2")
    a_room = a.sync(since=a_token, filt=NO_PRESENCE)["rooms"]["join"][room_id]
    assert timeline_ids(a_room) == [second] and a_room["state"]["events"] == []
    # And b's next sync does not treat the room as new either.
    again = b.sync(since=resp["next_batch"], filt=NO_PRESENCE)["rooms"]["join"][room_id]
    assert timeline_ids(again) == [second] and again["state"]["events"] == []


def test_display_name_change_after_restart_is_one_state_change(tmp_path):
    """After a restart the user's rooms are read back from the database: the position of
    the join (not of the last member event) must be what is remembered."""
    srv = ServerProcess(tmp_path / "hs")
    srv.start()
    try:
        a = User.register(srv.base_url, "alice")
        b = User.register(srv.base_url, "bob")
        room_id = a.create_room(preset="public_chat")
        b.join(room_id)
        b.set_displayname(room_id, "Bob before")
        token = b.sync(filt=NO_PRESENCE)["next_batch"]
        srv.stop()
        srv.start()
        change_id = b.set_displayname(room_id, "Bob after")
        room = b.sync(since=token, filt=NO_PRESENCE)["rooms"]["join"][room_id]
        assert timeline_ids(room) == [change_id]
        assert room["state"]["events"] == []
    finally:
        srv.stop()
        srv.stop_postgres()


def test_room_joined_and_left_between_syncs_is_in_leave_with_state(server, unique):
    a = User.register(server.base_url, unique("a"))
    b = User.register(server.base_url, unique("b"))
    room_id = a.create_room(preset="public_chat", name="brief visit", topic="hello")
    for i in range(12):  # more history than one timeline holds
        a.send(room_id, f"earlier {i}")
    # The room existed before b's token: only b's membership is new to b.
    token = b.sync(filt=NO_PRESENCE)["next_batch"]
    b.join(room_id)
    said = a.send(room_id, "while you were here")
    b.leave(room_id)
    resp = b.sync(since=token, filt=NO_PRESENCE)
    assert room_id not in resp["rooms"]["join"]
    assert room_id in resp["rooms"]["leave"], resp["rooms"]
    left = resp["rooms"]["leave"][room_id]
    events = left["timeline"]["events"]
    last = events[-1]
    assert (last["type"], last["state_key"], last["content"]["membership"]) == ("m.room.member", b.user_id, "leave")
    assert said in timeline_ids(left)
    # The client never had this room: state and timeline together describe it fully.
    seen = {(e["type"], e.get("state_key")) for e in left["state"]["events"] + events}
    for key in [("m.room.create", ""), ("m.room.power_levels", ""), ("m.room.join_rules", ""),
                ("m.room.name", ""), ("m.room.topic", ""), ("m.room.member", a.user_id)]:
        assert key in seen, key
    # Nothing after the leave.
    a.send(room_id, "after you left")
    later = b.sync(since=resp["next_batch"], filt=NO_PRESENCE)
    assert room_id not in later["rooms"]["leave"] and room_id not in later["rooms"]["join"]


def test_leave_of_a_room_known_before_is_not_sent_in_full(server, unique):
    a = User.register(server.base_url, unique("a"))
    b = User.register(server.base_url, unique("b"))
    room_id = a.create_room(preset="public_chat")
    b.join(room_id)
    token = b.sync(filt=NO_PRESENCE)["next_batch"]
    b.leave(room_id)
    left = b.sync(since=token, filt=NO_PRESENCE)["rooms"]["leave"][room_id]
    assert [e["content"].get("membership") for e in left["timeline"]["events"]] == ["leave"]
    assert left["state"]["events"] == []


def test_new_join_timeline_is_limited_unless_it_starts_at_creation(server, unique):
    a = User.register(server.base_url, unique("a"))
    b = User.register(server.base_url, unique("b"))
    room_id = a.create_room(preset="public_chat")
    said = [a.send(room_id, f"before b {i}") for i in range(3)]
    token = b.sync(filt=NO_PRESENCE)["next_batch"]
    b.join(room_id)
    # Only messages: fewer than the limit, but the room's history goes further back.
    only_messages = {**NO_PRESENCE, "room": {"timeline": {"limit": 10, "types": ["m.room.message"]}}}
    resp = b.sync(since=token, filt=only_messages)
    room = resp["rooms"]["join"][room_id]
    assert timeline_ids(room) == said
    assert room["timeline"]["limited"] is True
    assert room["timeline"]["prev_batch"]
    # Its state carries the room (it was new to the client).
    assert "m.room.create" in {e["type"] for e in room["state"]["events"]}
    back = b.ok("GET", f"/rooms/{room_id}/messages?dir=b&limit=50&from={room['timeline']['prev_batch']}")
    assert "m.room.create" in {e["type"] for e in back["chunk"]}
    # Nothing new afterwards: the room is not sent again.
    assert room_id not in b.sync(since=resp["next_batch"], filt=only_messages)["rooms"]["join"]

    # A room whose whole history fits is not limited: it starts at m.room.create.
    c = User.register(server.base_url, unique("c"))
    token = c.sync(filt=NO_PRESENCE)["next_batch"]
    small = a.create_room(preset="public_chat", invite=[c.user_id])
    c.join(small)
    room = c.sync(since=token, filt={**NO_PRESENCE, "room": {"timeline": {"limit": 50}}})["rooms"]["join"][small]
    assert room["timeline"]["events"][0]["type"] == "m.room.create"
    assert room["timeline"]["limited"] is False
