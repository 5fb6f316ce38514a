"""Device-list changes as E2EE clients see them, over real HTTP: a new login and a device
rename reach the user's other devices and everyone sharing a room (/sync
device_lists.changed and /keys/changes), users who come to share a room are `changed`,
and users who no longer share any room are `left`."""
from __future__ import annotations

from urllib.parse import quote

from tests.server_harness import Http, new_user

V3 = "/_matrix/client/v3"
PASSWORD = "secret-pw"


def _user(server, unique, prefix: str) -> Http:
    return new_user(server.base_url, unique(prefix))


def _since(client: Http) -> str:
    status, sync = client.request("GET", f"{V3}/sync?timeout=0")
    assert status == 200, sync
    return sync["next_batch"]


def _sync_changed(client: Http, since: str) -> list[str]:
    status, sync = client.request("GET", f"{V3}/sync?timeout=0&since={quote(since)}")
    assert status == 200, sync
    return sync["device_lists"]["changed"]


def _key_changes(client: Http, since: str) -> dict:
    status, body = client.request("GET", f"{V3}/keys/changes?from={quote(since)}")
    assert status == 200, body
    return body


def _shared_room(a: Http, *others: Http) -> str:
    status, room = a.request("POST", f"{V3}/createRoom", {"preset": "public_chat"})
    assert status == 200, room
    for o in others:
        assert o.request("POST", f"{V3}/join/{quote(room['room_id'])}", {})[0] == 200
    return room["room_id"]


def test_new_login_is_a_device_list_change(server, unique):
    alice, bob = _user(server, unique, "alice"), _user(server, unique, "bob")
    _shared_room(alice, bob)
    alice_since, bob_since = _since(alice), _since(bob)

    status, login = Http(server.base_url).request("POST", f"{V3}/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": alice.user_id},
        "password": PASSWORD})
    assert status == 200, login
    assert alice.user_id in _sync_changed(bob, bob_since)          # someone sharing a room
    assert alice.user_id in _sync_changed(alice, alice_since)      # the user's other device
    assert alice.user_id in _key_changes(bob, bob_since)["changed"]
    assert alice.user_id in _key_changes(alice, alice_since)["changed"]


def test_device_rename_is_a_device_list_change(server, unique):
    alice, bob = _user(server, unique, "alice"), _user(server, unique, "bob")
    _shared_room(alice, bob)
    bob_since = _since(bob)
    assert alice.request("PUT", f"{V3}/devices/{alice.device_id}", {"display_name": "Laptop"})[0] == 200
    assert alice.user_id in _sync_changed(bob, bob_since)
    assert alice.user_id in _key_changes(bob, bob_since)["changed"]
    # Only a real change counts: a request without a name changes nothing.
    bob_since = _since(bob)
    assert alice.request("PUT", f"{V3}/devices/{alice.device_id}", {})[0] == 200
    assert alice.user_id not in _key_changes(bob, bob_since)["changed"]


def test_key_changes_lists_newcomers_as_changed_and_leavers_as_left(server, unique):
    alice, bob, carol = (_user(server, unique, n) for n in ("alice", "bob", "carol"))
    room_id = _shared_room(alice, bob)
    t0 = _since(bob)
    assert carol.request("POST", f"{V3}/join/{quote(room_id)}", {})[0] == 200
    # Carol's keys are new to bob: he must fetch them.
    assert _key_changes(bob, t0) == {"changed": [carol.user_id], "left": []}

    t1 = _since(bob)
    assert carol.request("POST", f"{V3}/rooms/{quote(room_id)}/leave", {})[0] == 200
    assert _key_changes(bob, t1) == {"changed": [], "left": [carol.user_id]}

    # Leaving the last shared room makes everyone in it `left` for the leaver...
    _shared_room(alice, carol)  # alice and carol still share another room
    t2, alice_t2 = _since(bob), _since(alice)
    assert bob.request("POST", f"{V3}/rooms/{quote(room_id)}/leave", {})[0] == 200
    assert _key_changes(bob, t2) == {"changed": [], "left": [alice.user_id]}
    # ...and the leaver `left` for those who stay.
    assert _key_changes(alice, alice_t2) == {"changed": [], "left": [bob.user_id]}

    # A user who left one room but still shares another is not `left`.
    other = _shared_room(alice, bob)
    t3 = _since(bob)
    assert alice.request("POST", f"{V3}/rooms/{quote(other)}/invite", {"user_id": carol.user_id})[0] == 200
    assert bob.request("POST", f"{V3}/join/{quote(room_id)}", {})[0] == 200
    assert bob.request("POST", f"{V3}/rooms/{quote(other)}/leave", {})[0] == 200
    changes = _key_changes(bob, t3)
    assert alice.user_id not in changes["left"]
    assert carol.user_id not in changes["left"]


def test_key_changes_to_bounds_the_range(server, unique):
    alice, bob, carol = (_user(server, unique, n) for n in ("alice", "bob", "carol"))
    room_id = _shared_room(alice, bob)
    t0 = _since(bob)
    assert carol.request("POST", f"{V3}/join/{quote(room_id)}", {})[0] == 200
    t1 = _since(bob)
    assert alice.request("PUT", f"{V3}/devices/{alice.device_id}", {"display_name": "x"})[0] == 200
    status, body = bob.request("GET", f"{V3}/keys/changes?from={quote(t0)}&to={quote(t1)}")
    assert status == 200, body
    assert body == {"changed": [carol.user_id], "left": []}
