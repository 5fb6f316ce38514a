"""Lazy-loaded members in incremental /sync: the member event of every timeline sender
the device has not been sent yet comes in `state` (also in gappy syncs: senders whose
join is old, who joined in the gap, or who left in the timeline), once per device unless
`include_redundant_members`."""
from __future__ import annotations

from tests.sync_client import User, member_keys, timeline_ids

LAZY = {"presence": {"not_types": ["*"]},
        "room": {"timeline": {"limit": 1}, "state": {"lazy_load_members": True}}}
LAZY_REDUNDANT = {"presence": {"not_types": ["*"]},
                  "room": {"state": {"lazy_load_members": True, "include_redundant_members": True}}}


def _members(resp: dict, room_id: str) -> dict[str, dict]:
    room = resp["rooms"]["join"][room_id]
    ids = set(timeline_ids(room))
    state = room["state"]["events"]
    assert not ids & {e["event_id"] for e in state}, "state repeats timeline events"
    return {e["state_key"]: e for e in state if e["type"] == "m.room.member"}


def test_incremental_sync_sends_each_new_sender_once_per_device(server, unique):
    a, b, c, d = (User.register(server.base_url, unique(p)) for p in "abcd")
    room_id = a.create_room(preset="public_chat")
    for u in (b, c, d):
        u.join(room_id)
    a.send(room_id, "m0")
    first = b.sync(filt=LAZY)
    assert set(_members(first, room_id)) == {a.user_id, b.user_id}

    c.send(room_id, "m1")
    one = b.sync(since=first["next_batch"], filt=LAZY)
    members = _members(one, room_id)
    assert set(members) == {c.user_id}
    assert members[c.user_id]["content"]["membership"] == "join"

    c.send(room_id, "m2")
    a.send(room_id, "m3")
    two = b.sync(since=one["next_batch"], filt=LAZY)
    assert _members(two, room_id) == {}, "c and a were already sent to this device"

    # Another device of the same user has its own record of what it was sent.
    b2 = b.login_again()
    other = b2.sync(filt=LAZY)  # timeline: m3 from a
    d.send(room_id, "m4")
    assert set(_members(b.sync(since=two["next_batch"], filt=LAZY), room_id)) == {d.user_id}
    assert set(_members(b2.sync(since=other["next_batch"], filt=LAZY), room_id)) == {d.user_id}

    # include_redundant_members: every sender's member event, every time.
    again = b.sync(filt=LAZY)["next_batch"]
    d.send(room_id, "m5")
    a.send(room_id, "m6")
    redundant = b.sync(since=again, filt=LAZY_REDUNDANT)
    assert set(_members(redundant, room_id)) == {d.user_id, a.user_id}


def test_retried_sync_resends_members(server, unique):
    """A response may be lost: a retry from the same token must carry the members again."""
    a, b, c = (User.register(server.base_url, unique(p)) for p in "abc")
    room_id = a.create_room(preset="public_chat")
    b.join(room_id)
    c.join(room_id)
    a.send(room_id, "m0")
    token = b.sync(filt=LAZY)["next_batch"]
    c.send(room_id, "hello")
    assert set(_members(b.sync(since=token, filt=LAZY), room_id)) == {c.user_id}
    assert set(_members(b.sync(since=token, filt=LAZY), room_id)) == {c.user_id}


def test_gappy_sync_sends_members_at_the_start_of_the_timeline(server, unique):
    a, b, e, f, g, h = (User.register(server.base_url, unique(p)) for p in "abefgh")
    room_id = a.create_room(preset="public_chat")
    for u in (b, f, g, h):
        u.join(room_id)
    a.send(room_id, "before")
    first = b.sync(filt=LAZY)
    assert set(_members(first, room_id)) == {a.user_id, b.user_id}

    h.send(room_id, "in the gap")            # a sender only in the gap: not needed
    e.join(room_id)                          # joins in the gap, speaks in the timeline
    for i in range(5):
        a.send(room_id, f"filler {i}")
    e_said = e.send(room_id, "e speaks")
    g.send(room_id, "g speaks")              # an old member never sent to this device
    f.send(room_id, "f speaks")
    f.leave(room_id)                         # leaves within the timeline

    filt = {**LAZY, "room": {**LAZY["room"], "timeline": {"limit": 4}}}
    resp = b.sync(since=first["next_batch"], filt=filt)
    room = resp["rooms"]["join"][room_id]
    assert room["timeline"]["limited"] is True
    assert timeline_ids(room)[0] == e_said
    members = _members(resp, room_id)
    assert {e.user_id, f.user_id, g.user_id} <= set(members), set(members)
    assert h.user_id not in members
    # Each as it was where the timeline starts: f was still joined when it spoke.
    for u in (e, f, g):
        assert members[u.user_id]["content"]["membership"] == "join"
    assert member_keys(room["timeline"]["events"]) == {f.user_id}
