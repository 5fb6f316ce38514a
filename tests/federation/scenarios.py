"""Federation scenarios between a room's server (`a`, where the room is created) and
another server (`b`, whose users join it), run by the tests for two instances of this
server and for this server with Synapse, in both directions. Each takes two servers with
`base_url` and `server_name` and talks to them only through the client-server API."""
from __future__ import annotations

import uuid
from urllib.parse import quote

from tests.federation import harness
from tests.federation.harness import V3, Syncer, bodies, room_events, wait_for

SCENARIOS = ["join_by_alias_and_talk_both_ways", "typing_receipts_and_presence", "remote_profiles",
             "leave_rejoin_and_backfill_after_a_long_absence", "invites_accepted_and_declined",
             "device_keys_for_e2ee", "knock_and_be_let_in"]


def user(server, name: str):
    """A fresh user (the scenarios run more than once against the same servers)."""
    return harness.user(server, f"{name}-{uuid.uuid4().hex[:6]}")


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


def join_by_alias_and_talk_both_ways(a, b):
    alice, bob = user(a, "alice"), user(b, "bob")
    alias = f"talk-{uuid.uuid4().hex[:6]}"
    room_id = _room(alice, alias, name="Talk")
    status, body = bob.request("POST", f"{V3}/join/{quote(f'#{alias}:' + a.server_name)}", {})
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


def typing_receipts_and_presence(a, b):
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


def remote_profiles(a, b):
    alice, bob = user(a, "pat"), user(b, "quinn")
    alice.request("PUT", f"{V3}/profile/{quote(alice.user_id)}/displayname", {"displayname": "Pat from A"})
    status, profile = bob.request("GET", f"{V3}/profile/{quote(alice.user_id)}")
    assert status == 200 and profile["displayname"] == "Pat from A"
    status, body = bob.request("GET", f"{V3}/profile/{quote('@nobody:' + a.server_name)}")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"


def leave_rejoin_and_backfill_after_a_long_absence(a, b):
    alice, bob = user(a, "rita"), user(b, "sam")
    alias = f"history-{uuid.uuid4().hex[:6]}"
    room_id = _room(alice, alias)
    assert bob.request("POST", f"{V3}/join/{quote(f'#{alias}:' + a.server_name)}", {})[0] == 200
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


def invites_accepted_and_declined(a, b):
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


def device_keys_for_e2ee(a, b):
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


def knock_and_be_let_in(a, b):
    alice, kim = user(a, "alice"), user(b, "kim")
    room_id = _room(alice, preset="private_chat", initial_state=[
        {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}])
    kim_sync = Syncer(kim)
    kim_sync.once()
    status, body = kim.request("POST", f"{V3}/knock/{quote(room_id)}?server_name={quote(a.server_name)}",
                               {"reason": "let me in"})
    assert status == 200 and body["room_id"] == room_id, body
    wait_for(lambda: _members(alice, room_id).get(kim.user_id) == "knock", what="the knock on the room's server")
    kim_sync.until(lambda s: room_id in s.get("rooms", {}).get("knock", {}), what="the knock in the knocker's sync")
    status, body = alice.request("POST", f"{V3}/rooms/{room_id}/invite", {"user_id": kim.user_id})
    assert status == 200, body
    kim_sync.until(lambda s: room_id in s.get("rooms", {}).get("invite", {}), what="the invite after the knock")
    assert kim.request("POST", f"{V3}/rooms/{room_id}/join", {})[0] == 200
    _send(alice, room_id, "welcome kim")
    wait_for(lambda: "welcome kim" in bodies(kim, room_id), what="a message for the knocker")
