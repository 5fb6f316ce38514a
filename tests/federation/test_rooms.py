"""Two instances of this server, started by the tests, sharing rooms over federation:
join by alias, messages both ways, typing, receipts, presence, profiles, leave and
rejoin, invites accepted and declined, backfill of history sent while a user was away,
and device keys for end-to-end encryption."""
from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.federation.harness import V3, FederatedServer, Syncer, bodies, room_events, user, wait_for


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    a = FederatedServer(tmp_path_factory.mktemp("rooms-a"))
    b = FederatedServer(tmp_path_factory.mktemp("rooms-b"))
    a.start()
    b.start()
    yield a, b
    for s in (a, b):
        s.stop()
        s.stop_postgres()


def _room(client, alias: str | None = None, **extra) -> str:
    body = {"preset": "public_chat", **extra}
    if alias:
        body["room_alias_name"] = alias
    status, room = client.request("POST", f"{V3}/createRoom", body)
    assert status == 200, room
    return room["room_id"]


def _send(client, room_id: str, text: str) -> str:
    status, body = client.request("PUT", f"{V3}/rooms/{room_id}/send/m.room.message/{quote(text)}",
                                  {"msgtype": "m.text", "body": text})
    assert status == 200, body
    return body["event_id"]


def _members(client, room_id: str) -> dict[str, str]:
    status, body = client.request("GET", f"{V3}/rooms/{room_id}/members")
    assert status == 200, body
    return {e["state_key"]: e["content"]["membership"] for e in body["chunk"]}


def test_join_by_alias_and_talk_both_ways(pair):
    a, b = pair
    alice, bob = user(a, "alice"), user(b, "bob")
    room_id = _room(alice, "talk", name="Talk")
    status, body = bob.request("POST", f"{V3}/join/{quote('#talk:' + a.server_name)}", {})
    assert status == 200 and body["room_id"] == room_id, body
    bob_sync = Syncer(bob)
    bob_sync.once()
    _send(alice, room_id, "hello from A")
    bob_sync.until(lambda s: any(e.get("content", {}).get("body") == "hello from A"
                                 for e in room_events(s, room_id)), what="A's message on B")
    _send(bob, room_id, "hello from B")
    wait_for(lambda: "hello from B" in bodies(alice, room_id), what="B's message on A")
    assert bodies(alice, room_id) == bodies(bob, room_id) == ["hello from A", "hello from B"]
    # Both servers agree on the room's state: names and members.
    assert _members(alice, room_id) == _members(bob, room_id) == {alice.user_id: "join", bob.user_id: "join"}
    status, name = bob.request("GET", f"{V3}/rooms/{room_id}/state/m.room.name")
    assert status == 200 and name == {"name": "Talk"}


def test_typing_receipts_and_presence(pair):
    a, b = pair
    alice, bob = user(a, "tina"), user(b, "tom")
    room_id = _room(alice)
    assert bob.request("POST", f"{V3}/join/{quote(room_id)}?server_name={quote(a.server_name)}", {})[0] == 200
    event_id = _send(alice, room_id, "read me")
    bob_sync = Syncer(bob)
    bob_sync.once()
    alice.request("PUT", f"{V3}/rooms/{room_id}/typing/{quote(alice.user_id)}", {"typing": True, "timeout": 20000})
    bob_sync.until(lambda s: any(e["type"] == "m.typing" and alice.user_id in e["content"]["user_ids"]
                                 for e in room_events(s, room_id, "ephemeral")), what="typing on B")
    alice_sync = Syncer(alice)
    alice_sync.once()
    wait_for(lambda: event_id in str(bob.request("GET", f"{V3}/rooms/{room_id}/event/{quote(event_id)}")[1]))
    assert bob.request("POST", f"{V3}/rooms/{room_id}/receipt/m.read/{quote(event_id)}", {})[0] == 200
    alice_sync.until(lambda s: any(e["type"] == "m.receipt" and bob.user_id in str(e["content"])
                                   for e in room_events(s, room_id, "ephemeral")), what="receipt on A")
    alice.request("PUT", f"{V3}/presence/{quote(alice.user_id)}/status", {"presence": "online",
                                                                        "status_msg": "at my desk"})
    bob_sync.until(lambda s: any(e["sender"] == alice.user_id and e["content"].get("status_msg") == "at my desk"
                                 for e in s.get("presence", {}).get("events", [])), what="presence on B")
    status, presence = bob.request("GET", f"{V3}/presence/{quote(alice.user_id)}/status")
    assert status == 200 and presence["presence"] == "online"


def test_remote_profiles(pair):
    a, b = pair
    alice, bob = user(a, "pat"), user(b, "quinn")
    alice.request("PUT", f"{V3}/profile/{quote(alice.user_id)}/displayname", {"displayname": "Pat from A"})
    status, profile = bob.request("GET", f"{V3}/profile/{quote(alice.user_id)}")
    assert status == 200 and profile["displayname"] == "Pat from A"
    status, body = bob.request("GET", f"{V3}/profile/{quote('@nobody:' + a.server_name)}")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"


def test_leave_rejoin_and_backfill_after_a_long_absence(pair):
    a, b = pair
    alice, bob = user(a, "rita"), user(b, "sam")
    room_id = _room(alice, "history")
    assert bob.request("POST", f"{V3}/join/{quote('#history:' + a.server_name)}", {})[0] == 200
    _send(alice, room_id, "before")
    wait_for(lambda: "before" in bodies(bob, room_id), what="first message on B")
    assert bob.request("POST", f"{V3}/rooms/{room_id}/leave", {})[0] == 200
    wait_for(lambda: _members(alice, room_id).get(bob.user_id) == "leave", what="the leave on A")
    away = [f"while away {i}" for i in range(60)]
    for text in away:
        _send(alice, room_id, text)
    # B is no longer in the room: nothing reaches it.
    assert "while away 0" not in bodies(bob, room_id)
    assert bob.request("POST", f"{V3}/join/{quote(room_id)}?server_name={quote(a.server_name)}", {})[0] == 200
    _send(alice, room_id, "after")
    wait_for(lambda: "after" in bodies(bob, room_id, 10), what="a message after the rejoin")
    # Paging back fetches what was sent meanwhile from A (the room's history is shared).
    assert bodies(bob, room_id, 200) == ["before", *away, "after"]
    assert _members(bob, room_id)[bob.user_id] == "join"


def test_invites_accepted_and_declined(pair):
    a, b = pair
    alice, carol, dave = user(a, "uma"), user(b, "carol"), user(b, "dave")
    room_id = _room(alice, preset="private_chat", name="Private")
    carol_sync, dave_sync = Syncer(carol), Syncer(dave)
    carol_sync.once()
    dave_sync.once()
    for invitee in (carol, dave):
        status, body = alice.request("POST", f"{V3}/rooms/{room_id}/invite", {"user_id": invitee.user_id})
        assert status == 200, body
    invite = carol_sync.until(lambda s: s.get("rooms", {}).get("invite", {}).get(room_id), what="the invite on B")
    names = [e["content"].get("name") for e in invite["invite_state"]["events"] if e["type"] == "m.room.name"]
    assert names == ["Private"]
    assert carol.request("POST", f"{V3}/rooms/{room_id}/join", {})[0] == 200
    _send(alice, room_id, "welcome carol")
    wait_for(lambda: "welcome carol" in bodies(carol, room_id), what="a message for carol")
    dave_sync.until(lambda s: s.get("rooms", {}).get("invite", {}).get(room_id), what="dave's invite")
    assert dave.request("POST", f"{V3}/rooms/{room_id}/leave", {})[0] == 200
    wait_for(lambda: _members(alice, room_id) == {alice.user_id: "join", carol.user_id: "join", dave.user_id: "leave"},
             what="carol in, dave declined, on A")
    dave_sync.until(lambda s: room_id in s.get("rooms", {}).get("leave", {}), what="dave's room gone")


def test_device_keys_for_e2ee(pair):
    a, b = pair
    alice, bob = user(a, "vera"), user(b, "walt")
    room_id = _room(alice)
    assert bob.request("POST", f"{V3}/join/{quote(room_id)}?server_name={quote(a.server_name)}", {})[0] == 200
    _, who = bob.request("GET", f"{V3}/account/whoami")
    device = who["device_id"]

    def upload(curve: str, otk: str) -> None:
        status, _ = bob.request("POST", f"{V3}/keys/upload", {
            "device_keys": {"user_id": bob.user_id, "device_id": device,
                            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
                            "keys": {f"curve25519:{device}": curve, f"ed25519:{device}": "edkey"},
                            "signatures": {bob.user_id: {f"ed25519:{device}": "sig"}}},
            "one_time_keys": {f"signed_curve25519:{otk}": {"key": otk, "signatures": {}}}})
        assert status == 200

    upload("curve-1", "otk1")
    status, keys = alice.request("POST", f"{V3}/keys/query", {"device_keys": {bob.user_id: []}})
    assert status == 200 and keys["failures"] == {}
    assert keys["device_keys"][bob.user_id][device]["keys"][f"curve25519:{device}"] == "curve-1"
    status, claimed = alice.request("POST", f"{V3}/keys/claim",
                                    {"one_time_keys": {bob.user_id: {device: "signed_curve25519"}}})
    assert status == 200 and claimed["one_time_keys"][bob.user_id][device] == {
        "signed_curve25519:otk1": {"key": "otk1", "signatures": {}}}
    # A change of bob's keys reaches alice's sync as a device-list change, and the new keys.
    alice_sync = Syncer(alice)
    alice_sync.once()
    upload("curve-2", "otk2")
    alice_sync.until(lambda s: bob.user_id in s.get("device_lists", {}).get("changed", []),
                     what="bob's device-list change on A")
    _, keys = alice.request("POST", f"{V3}/keys/query", {"device_keys": {bob.user_id: [device]}})
    assert keys["device_keys"][bob.user_id][device]["keys"][f"curve25519:{device}"] == "curve-2"
    # To-device messages reach the other server's device.
    status, _ = alice.request("PUT", f"{V3}/sendToDevice/m.room.encrypted/td1", {"messages": {
        bob.user_id: {device: {"algorithm": "m.olm.v1.curve25519-aes-sha2", "ciphertext": {}}}}})
    assert status == 200
    bob_sync = Syncer(bob)
    bob_sync.until(lambda s: any(e["sender"] == alice.user_id for e in s.get("to_device", {}).get("events", [])),
                   what="the to-device message on B")
