"""Presence in /sync of users who newly share a room with the syncing user: their current
presence comes with the room, even if it last changed before the sync token."""
from __future__ import annotations

from urllib.parse import quote

from tests.sync_client import User


def _presence(resp: dict) -> dict[str, dict]:
    return {e["sender"]: e["content"] for e in resp["presence"]["events"]}


def test_newly_joined_room_brings_its_members_presence(server, unique):
    a = User.register(server.base_url, unique("a"))
    b = User.register(server.base_url, unique("b"))
    a.ok("PUT", f"/presence/{quote(a.user_id)}/status", {"presence": "online", "status_msg": "at my desk"})
    # b shares no room with a yet, and a's presence will not change again.
    token = b.sync(set_presence="offline")["next_batch"]
    room_id = a.create_room(preset="public_chat")
    b.join(room_id)
    resp = b.sync(since=token, set_presence="offline")
    assert room_id in resp["rooms"]["join"]
    seen = _presence(resp)
    assert a.user_id in seen, resp["presence"]
    assert seen[a.user_id]["status_msg"] == "at my desk"


def test_member_joining_my_room_brings_their_presence(server, unique):
    a = User.register(server.base_url, unique("a"))
    c = User.register(server.base_url, unique("c"))
    room_id = a.create_room(preset="public_chat")
    c.ok("PUT", f"/presence/{quote(c.user_id)}/status", {"presence": "unavailable", "status_msg": "away"})
    # Some activity first, so that joining does not itself change c's presence.
    c.send(c.create_room(preset="private_chat"), "busy")
    token = a.sync(set_presence="offline")["next_batch"]
    c.join(room_id)
    resp = a.sync(since=token, set_presence="offline")
    seen = _presence(resp)
    assert seen.get(c.user_id, {}).get("status_msg") == "away", resp["presence"]
    # Not again while nothing changes.
    a.send(room_id, "hi")
    later = a.sync(since=resp["next_batch"], set_presence="offline")
    assert c.user_id not in _presence(later)


def test_presence_filter_applies_to_new_rooms_too(server, unique):
    a = User.register(server.base_url, unique("a"))
    b = User.register(server.base_url, unique("b"))
    a.ok("PUT", f"/presence/{quote(a.user_id)}/status", {"presence": "online"})
    token = b.sync(set_presence="offline")["next_batch"]
    room_id = a.create_room(preset="public_chat")
    b.join(room_id)
    resp = b.sync(since=token, set_presence="offline", filt={"presence": {"not_senders": [a.user_id]}})
    assert a.user_id not in _presence(resp)
