"""Room account data on its own (a read marker, a tag) brings its room into the next
incremental /sync, and wakes a waiting long-poll."""
from __future__ import annotations

import threading
import time
from urllib.parse import quote

from tests.sync_client import User

NO_PRESENCE = {"presence": {"not_types": ["*"]}}


def _room_account_data(resp: dict, room_id: str) -> dict[str, dict]:
    room = resp["rooms"]["join"].get(room_id)
    assert room is not None, f"room missing from the sync: {resp['rooms']}"
    return {e["type"]: e["content"] for e in room["account_data"]["events"]}


def test_read_marker_alone_brings_the_room(server, unique):
    a = User.register(server.base_url, unique("a"))
    room_id = a.create_room(preset="private_chat")
    event_id = a.send(room_id, "read me")
    token = a.sync(filt=NO_PRESENCE)["next_batch"]
    a.ok("POST", f"/rooms/{quote(room_id)}/read_markers", {"m.fully_read": event_id})
    resp = a.sync(since=token, filt=NO_PRESENCE)
    assert resp["next_batch"] != token
    assert _room_account_data(resp, room_id)["m.fully_read"] == {"event_id": event_id}
    room = resp["rooms"]["join"][room_id]
    assert room["timeline"]["events"] == [] and room["state"]["events"] == []
    # Sent once.
    after = a.sync(since=resp["next_batch"], filt=NO_PRESENCE)
    assert room_id not in after["rooms"]["join"]


def test_tag_alone_brings_the_room_and_wakes_the_long_poll(server, unique):
    a = User.register(server.base_url, unique("a"))
    room_id = a.create_room(preset="private_chat")
    token = a.sync(filt=NO_PRESENCE)["next_batch"]
    result: dict = {}

    def poll():
        t0 = time.monotonic()
        result["resp"] = a.sync(since=token, filt=NO_PRESENCE, timeout=10_000)
        result["elapsed"] = time.monotonic() - t0

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(0.5)
    a.ok("PUT", f"/user/{quote(a.user_id)}/rooms/{quote(room_id)}/tags/m.favourite", {"order": 0.5})
    t.join(15)
    assert result["elapsed"] < 5
    assert _room_account_data(result["resp"], room_id)["m.tag"] == {"tags": {"m.favourite": {"order": 0.5}}}


def test_room_account_data_respects_the_room_filter(server, unique):
    a = User.register(server.base_url, unique("a"))
    room_id = a.create_room(preset="private_chat")
    token = a.sync(filt=NO_PRESENCE)["next_batch"]
    a.ok("PUT", f"/user/{quote(a.user_id)}/rooms/{quote(room_id)}/account_data/org.example.note", {"n": 1})
    filt = {**NO_PRESENCE, "room": {"account_data": {"not_types": ["org.example.*"]}}}
    resp = a.sync(since=token, filt=filt)
    assert room_id not in resp["rooms"]["join"]
    assert _room_account_data(a.sync(since=token, filt=NO_PRESENCE), room_id)["org.example.note"] == {"n": 1}
