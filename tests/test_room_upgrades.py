"""POST /rooms/{roomId}/upgrade: the replacement room (predecessor, copied state, power
levels, bans, type and space children), the tombstone and quietened power levels of the
old room, aliases, canonical alias and directory listing moved, members following as
documented, the tenant kept, permissions, bad input, and every advertised room version."""
from __future__ import annotations

import pytest

from tests.tenant_world import V3, create_room, put_state, running_world, sync

SERVER = "test.local"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with running_world(tmp_path_factory.mktemp("upgrades")) as w:
        users = {n: w.user(n, "acme") for n in ("alice", "carol", "dave", "erin", "frank")}
        users["bob"] = w.user("bob", "globex")
        yield w, users


def _upgrade(user, room_id: str, body=None, raw: bytes | None = None) -> tuple[int, dict]:
    return user.request("POST", f"{V3}/rooms/{room_id}/upgrade", body, raw=raw)


def _state(user, room_id: str, event_type: str, state_key: str = "") -> tuple[int, dict]:
    return user.request("GET", f"{V3}/rooms/{room_id}/state/{event_type}/{state_key}")


def _content(user, room_id: str, event_type: str, state_key: str = "") -> dict:
    status, content = _state(user, room_id, event_type, state_key)
    assert status == 200, (event_type, content)
    return content


def _join(user, room_id: str) -> int:
    return user.request("POST", f"{V3}/rooms/{room_id}/join", {})[0]


COPIED = {
    "m.room.name": {"name": "Order 4711"},
    "m.room.topic": {"topic": "Delivery to Hamburg"},
    "m.room.avatar": {"url": "mxc://test.local/avatar"},
    "m.room.encryption": {"algorithm": "m.megolm.v1.aes-sha2"},
    "m.room.guest_access": {"guest_access": "forbidden"},
    "m.room.history_visibility": {"history_visibility": "invited"},
    "m.room.server_acl": {"allow": ["*"], "deny": ["evil.test"], "allow_ip_literals": False},
}


def test_private_room_upgrade_copies_state_and_moves_aliases(world):
    _, u = world
    alice, carol, dave, erin = u["alice"], u["carol"], u["dave"], u["erin"]
    old = create_room(alice, room_version="11", room_alias_name="order-4711", visibility="public",
                      preset="private_chat", invite=[carol.user_id, erin.user_id],
                      initial_state=[{"type": t, "state_key": "", "content": c} for t, c in COPIED.items()]
                      + [{"type": "com.example.erp", "state_key": "", "content": {"order": 4711}}])
    assert _join(carol, old) == 200
    assert alice.request("PUT", f"{V3}/directory/room/%23acme.order-4711-alt:{SERVER}", {"room_id": old})[0] == 200
    put_state(alice, old, "m.room.canonical_alias", {
        "alias": f"#acme.order-4711:{SERVER}",
        "alt_aliases": [f"#acme.order-4711-alt:{SERVER}", "#keep:elsewhere.test"]})
    pl = _content(alice, old, "m.room.power_levels")
    put_state(alice, old, "m.room.power_levels", {**pl, "users": {**pl["users"], carol.user_id: 50}})
    assert alice.request("POST", f"{V3}/rooms/{old}/ban", {"user_id": dave.user_id, "reason": "spam"})[0] == 200
    old_pl = _content(alice, old, "m.room.power_levels")

    status, body = _upgrade(alice, old, {"new_version": "12"})
    assert status == 200, body
    new = body["replacement_room"]
    assert new != old
    # The new room: v12, predecessor without event id, same tenant, no copied `type`.
    create = _content(alice, new, "m.room.create")
    assert create["room_version"] == "12" and create["predecessor"] == {"room_id": old}
    assert create["io.erpchat.tenant"] == "acme" and "type" not in create
    for event_type, content in COPIED.items():
        assert _content(alice, new, event_type) == content, event_type
    assert _content(alice, new, "m.room.join_rules") == {"join_rule": "invite"}
    assert _state(alice, new, "com.example.erp")[0] == 404  # not the spec's to copy
    # Power levels: as before, but alice is now a creator, who is never listed in v12.
    new_pl = _content(alice, new, "m.room.power_levels")
    expected = {**old_pl, "users": {k: v for k, v in old_pl["users"].items() if k != alice.user_id}}
    assert new_pl == expected and new_pl["users"] == {carol.user_id: 50}
    # Bans follow; memberships do not (members follow the tombstone, invited by a moderator
    # where the join rule asks for it).
    assert _content(alice, new, "m.room.member", dave.user_id)["membership"] == "ban"
    _, members = alice.request("GET", f"{V3}/rooms/{new}/members")
    assert {(e["state_key"], e["content"]["membership"]) for e in members["chunk"]} == {
        (alice.user_id, "join"), (dave.user_id, "ban")}
    assert _join(carol, new) == 403
    assert alice.request("POST", f"{V3}/rooms/{new}/invite", {"user_id": carol.user_id})[0] == 200
    assert _join(carol, new) == 200
    # Aliases (in acme's part of the alias space), the canonical alias and the directory
    # listing moved; the remote alias stayed.
    for alias in ("acme.order-4711", "acme.order-4711-alt"):
        status, found = alice.request("GET", f"{V3}/directory/room/%23{alias}:{SERVER}")
        assert (status, found["room_id"]) == (200, new)
    assert _content(alice, new, "m.room.canonical_alias") == {
        "alias": f"#acme.order-4711:{SERVER}", "alt_aliases": [f"#acme.order-4711-alt:{SERVER}"]}
    assert _content(alice, old, "m.room.canonical_alias") == {"alt_aliases": ["#keep:elsewhere.test"]}
    assert alice.request("GET", f"{V3}/directory/list/room/{new}")[1] == {"visibility": "public"}
    assert alice.request("GET", f"{V3}/directory/list/room/{old}")[1] == {"visibility": "private"}
    # The old room: tombstone, and regular members can no longer talk or invite.
    assert _content(alice, old, "m.room.tombstone") == {
        "body": "This room has been replaced", "replacement_room": new}
    quiet = _content(alice, old, "m.room.power_levels")
    assert quiet["events_default"] == 50 and quiet["invite"] == 50
    assert {k: v for k, v in quiet.items() if k not in ("events_default", "invite")} == \
        {k: v for k, v in old_pl.items() if k not in ("events_default", "invite")}


def test_public_room_members_follow_and_old_room_falls_quiet(world):
    _, u = world
    alice, frank, bob = u["alice"], u["frank"], u["bob"]
    old = create_room(alice, preset="public_chat", name="Lobby")
    assert _join(frank, old) == 200
    since = sync(frank)["next_batch"]
    status, body = _upgrade(alice, old, {"new_version": "12"})
    assert status == 200, body
    new = body["replacement_room"]
    # frank sees the tombstone in his sync and follows it; bob (another tenant) cannot.
    timeline = sync(frank, since)["rooms"]["join"][old]["timeline"]["events"]
    tombstones = [e for e in timeline if e["type"] == "m.room.tombstone"]
    assert [e["content"]["replacement_room"] for e in tombstones] == [new]
    assert _join(frank, new) == 200
    assert _join(bob, new) == 403
    status, answer = frank.request("PUT", f"{V3}/rooms/{old}/send/m.room.message/t1",
                                   {"msgtype": "m.text", "body": "still here?"})
    assert status == 403 and answer["errcode"] == "M_FORBIDDEN"


def test_downgrade_names_the_last_event_and_writes_creator_power_down(world):
    _, u = world
    alice = u["alice"]
    old = create_room(alice, name="v12 room")  # default version 12: alice's power is implied
    status, sent = alice.request("PUT", f"{V3}/rooms/{old}/send/m.room.message/last",
                                 {"msgtype": "m.text", "body": "last words"})
    assert status == 200
    status, body = _upgrade(alice, old, {"new_version": "10"})
    assert status == 200, body
    new = body["replacement_room"]
    create = _content(alice, new, "m.room.create")
    assert create["room_version"] == "10" and create["creator"] == alice.user_id
    assert create["predecessor"] == {"room_id": old, "event_id": sent["event_id"]}
    pl = _content(alice, new, "m.room.power_levels")
    assert pl["users"] == {alice.user_id: 100}
    # alice can still run the room, e.g. rename it.
    put_state(alice, new, "m.room.name", {"name": "renamed"})


def test_v11_upgrade_raises_the_upgrader_only_while_copying(world):
    _, u = world
    alice, carol = u["alice"], u["carol"]
    old = create_room(alice, room_version="11", preset="public_chat",
                      power_level_content_override={"events": {"m.room.tombstone": 50, "m.room.name": 90},
                                                    "users": {alice.user_id: 100}})
    assert _join(carol, old) == 200
    pl = _content(alice, old, "m.room.power_levels")
    put_state(alice, old, "m.room.power_levels", {**pl, "users": {**pl["users"], carol.user_id: 60}})
    put_state(alice, old, "m.room.name", {"name": "needs 90"})
    status, body = _upgrade(carol, old, {"new_version": "11"})
    assert status == 200, body
    new = body["replacement_room"]
    assert _content(carol, new, "m.room.name") == {"name": "needs 90"}  # sent at a raised level
    new_pl = _content(carol, new, "m.room.power_levels")
    assert new_pl["users"] == {alice.user_id: 100, carol.user_id: 60}  # and set back
    status, create = carol.request("GET", f"{V3}/rooms/{new}/state/m.room.create/?format=event")
    assert create["sender"] == carol.user_id and "creator" not in create["content"]  # v11: the sender


def test_space_upgrade_keeps_type_and_children_and_additional_creators(world):
    _, u = world
    alice, carol = u["alice"], u["carol"]
    space = create_room(alice, name="Acme", creation_content={"type": "m.space"})
    child, gone = create_room(alice), create_room(alice)
    put_state(alice, space, "m.space.child", {"via": [SERVER], "order": "a"}, child)
    put_state(alice, space, "m.space.child", {}, gone)  # removed from the space
    status, body = _upgrade(alice, space, {"new_version": "12", "additional_creators": [carol.user_id]})
    assert status == 200, body
    new = body["replacement_room"]
    create = _content(alice, new, "m.room.create")
    assert create["type"] == "m.space" and create["additional_creators"] == [carol.user_id]
    assert _content(alice, new, "m.space.child", child) == {"via": [SERVER], "order": "a"}
    assert _state(alice, new, "m.space.child", gone)[0] == 404
    assert carol.user_id not in _content(alice, new, "m.room.power_levels")["users"]


def test_who_may_upgrade_and_the_tenant_wall(world):
    _, u = world
    alice, carol, erin, bob = u["alice"], u["carol"], u["erin"], u["bob"]
    room = create_room(alice, preset="public_chat", room_version="11")
    assert _join(carol, room) == 200
    status, body = _upgrade(carol, room, {"new_version": "12"})  # below the tombstone level
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = _upgrade(erin, room, {"new_version": "12"})  # not in the room
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    missing = _upgrade(bob, "!missing:test.local", {"new_version": "12"})
    assert missing[0] == 404 and missing[1]["errcode"] == "M_NOT_FOUND"
    assert _upgrade(bob, room, {"new_version": "12"}) == missing
    assert _upgrade(alice, "!missing:test.local", {"new_version": "12"}) == missing
    assert _state(alice, room, "m.room.tombstone")[0] == 404  # nothing happened


@pytest.mark.parametrize("body,raw,errcode", [
    ({"new_version": "99"}, None, "M_UNSUPPORTED_ROOM_VERSION"),
    ({"new_version": "13"}, None, "M_UNSUPPORTED_ROOM_VERSION"),
    ({}, None, "M_MISSING_PARAM"),
    ({"new_version": 12}, None, "M_BAD_JSON"),
    ({"new_version": "12", "additional_creators": "@carol:test.local"}, None, "M_BAD_JSON"),
    ({"new_version": "12", "additional_creators": [7]}, None, "M_BAD_JSON"),
    ({"new_version": "12", "additional_creators": ["carol"]}, None, "M_INVALID_PARAM"),
    (None, b"{", "M_NOT_JSON"),
    (None, b"", "M_NOT_JSON"),
    (None, b"\"12\"", "M_BAD_JSON"),
])
def test_bad_input(world, body, raw, errcode):
    _, u = world
    room = create_room(u["alice"])
    for user, target in ((u["alice"], room), (u["bob"], room), (u["bob"], "!missing:test.local")):
        status, answer = _upgrade(user, target, body, raw=raw)
        assert status == 400 and answer["errcode"] == errcode, (user.user_id, answer)
    assert _state(u["alice"], room, "m.room.tombstone")[0] == 404


def test_every_advertised_room_version_can_be_upgraded_to(world):
    _, u = world
    alice = u["alice"]
    status, caps = alice.request("GET", f"{V3}/capabilities")
    versions = caps["capabilities"]["m.room_versions"]
    assert versions["default"] in versions["available"]
    for version in versions["available"]:
        room = create_room(alice, name=f"to {version}")
        status, body = _upgrade(alice, room, {"new_version": version})
        assert status == 200, (version, body)
        assert _content(alice, body["replacement_room"], "m.room.create")["room_version"] == version
