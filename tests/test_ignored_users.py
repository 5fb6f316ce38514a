"""m.ignored_user_list: events (but not state) and invites from ignored users are dropped
from /sync, /messages and /context; a change of the list applies from the next sync on,
and events sent while a user was ignored are not sent later."""
from __future__ import annotations

import threading
import time
from urllib.parse import quote

from tests.sync_client import User, timeline_ids

NO_PRESENCE = {"presence": {"not_types": ["*"]}}


def _ignore(user: User, *ignored: User) -> None:
    user.put_account_data("m.ignored_user_list", {"ignored_users": {u.user_id: {} for u in ignored}})


def _room_timeline(resp: dict, room_id: str) -> list[str]:
    room = resp["rooms"]["join"].get(room_id)
    return timeline_ids(room) if room else []


def test_sync_drops_ignored_senders_but_keeps_their_state(server, unique):
    a, b, c = (User.register(server.base_url, unique(p)) for p in "abc")
    room_id = a.create_room(preset="public_chat")
    b.join(room_id)
    c.join(room_id)
    token = b.sync(filt=NO_PRESENCE)["next_batch"]
    _ignore(b, c)
    hidden = c.send(room_id, "you cannot see me")
    shown = a.send(room_id, "hello")
    state_change = c.set_displayname(room_id, "C renamed")
    resp = b.sync(since=token, filt=NO_PRESENCE)
    ids = _room_timeline(resp, room_id)
    assert hidden not in ids
    assert shown in ids and state_change in ids
    ad = {e["type"]: e["content"] for e in resp["account_data"]["events"]}
    assert ad["m.ignored_user_list"] == {"ignored_users": {c.user_id: {}}}
    # Initial sync too.
    initial = b.sync(filt={**NO_PRESENCE, "room": {"timeline": {"limit": 50}}})
    ids = _room_timeline(initial, room_id)
    assert hidden not in ids and shown in ids
    # Others still see c.
    assert hidden in _room_timeline(a.sync(filt={**NO_PRESENCE, "room": {"timeline": {"limit": 50}}}), room_id)


def test_ignored_sender_does_not_end_a_long_poll(server, unique):
    a, b = (User.register(server.base_url, unique(p)) for p in "ab")
    room_id = a.create_room(preset="public_chat")
    b.join(room_id)
    _ignore(b, a)
    token = b.sync(filt=NO_PRESENCE)["next_batch"]
    result: dict = {}

    def poll():
        t0 = time.monotonic()
        result["resp"] = b.sync(since=token, filt=NO_PRESENCE, timeout=1500)
        result["elapsed"] = time.monotonic() - t0

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(0.3)
    hidden = a.send(room_id, "ignored")
    t.join(10)
    assert hidden not in _room_timeline(result["resp"], room_id)
    assert result["elapsed"] >= 1.4


def test_invites_from_ignored_users_are_not_sent(server, unique):
    a, b, c = (User.register(server.base_url, unique(p)) for p in "abc")
    _ignore(b, c)
    token = b.sync(filt=NO_PRESENCE)["next_batch"]
    from_c = c.create_room(preset="private_chat", invite=[b.user_id])
    from_a = a.create_room(preset="private_chat", invite=[b.user_id])
    resp = b.sync(since=token, filt=NO_PRESENCE)
    assert from_a in resp["rooms"]["invite"]
    assert from_c not in resp["rooms"]["invite"]
    assert from_c not in b.sync(filt=NO_PRESENCE)["rooms"]["invite"]


def test_messages_and_context_drop_ignored_senders(server, unique):
    a, b, c = (User.register(server.base_url, unique(p)) for p in "abc")
    room_id = a.create_room(preset="public_chat")
    b.join(room_id)
    c.join(room_id)
    first = a.send(room_id, "one")
    hidden = c.send(room_id, "two")
    last = a.send(room_id, "three")
    _ignore(b, c)
    page = b.ok("GET", f"/rooms/{quote(room_id)}/messages?dir=b&limit=20")
    ids = [e["event_id"] for e in page["chunk"]]
    assert first in ids and last in ids and hidden not in ids
    # c's own membership (state) is still there.
    assert any(e["type"] == "m.room.member" and e["state_key"] == c.user_id for e in page["chunk"])
    ctx = b.ok("GET", f"/rooms/{quote(room_id)}/context/{quote(first)}?limit=10")
    around = [e["event_id"] for e in ctx["events_before"] + ctx["events_after"]]
    assert last in around and hidden not in around
    status, body = b.call("GET", f"/rooms/{quote(room_id)}/context/{quote(hidden)}")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    # a, who ignores nobody, sees everything.
    assert hidden in [e["event_id"] for e in a.ok("GET", f"/rooms/{quote(room_id)}/messages?dir=b&limit=20")["chunk"]]


def test_unignoring_resumes_without_what_was_missed(server, unique):
    a, b, c = (User.register(server.base_url, unique(p)) for p in "abc")
    room_id = a.create_room(preset="public_chat")
    b.join(room_id)
    c.join(room_id)
    token = b.sync(filt=NO_PRESENCE)["next_batch"]
    _ignore(b, c)
    missed = c.send(room_id, "while ignored")
    _ignore(b)  # the list is empty again
    resumed = c.send(room_id, "after")
    resp = b.sync(since=token, filt=NO_PRESENCE)
    ids = _room_timeline(resp, room_id)
    assert resumed in ids
    assert missed not in ids
    ad = {e["type"]: e["content"] for e in resp["account_data"]["events"]}
    assert ad["m.ignored_user_list"] == {"ignored_users": {}}
    # A fresh initial sync is how a client gets what was missed.
    initial = b.sync(filt={**NO_PRESENCE, "room": {"timeline": {"limit": 50}}})
    assert missed in _room_timeline(initial, room_id)
