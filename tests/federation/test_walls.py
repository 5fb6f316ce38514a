"""What another server may reach here: tenant rooms and users stay closed unless the
tenant is listed in `federation.federated_tenants` (then the room keeps its tenant's wall
on this side too); a server with no member in a room gets nothing of it; a room's server
ACL shuts a server out."""
from __future__ import annotations

import time
import uuid
from urllib.parse import quote

import pytest

from homeserver.event_hashing import add_content_hash, compute_event_id, sign_event
from homeserver.room_versions import KNOWN_ROOM_VERSIONS
from tests.federation.harness import V3, FedHttp, admin_client, bodies, federated_pair, user, wait_for

F1 = "/_matrix/federation/v1"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with federated_pair(tmp_path_factory, "walls", a_federation_extra="  federated_tenants: [globex]\n",
                        admin_on_a=True) as (a, b):
        yield a, b, admin_client(a)


def _name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


def _room(client, **extra) -> str:
    return _room_and_alias(client, **extra)[0]


def _room_and_alias(client, **extra) -> tuple[str, str | None]:
    """(room id, the alias the server gave: tenants' aliases carry their slug)."""
    status, room = client.request("POST", f"{V3}/createRoom", {"preset": "public_chat", **extra})
    assert status == 200, room
    return room["room_id"], room.get("room_alias")


def test_closed_tenant_rooms_and_users(world):
    a, b, admin = world
    acme = user(a, _name("acme"), tenant="acme", admin=admin)
    bob = user(b, _name("bob"))
    room_id, alias = _room_and_alias(acme, room_alias_name=_name("acmeroom"))
    assert alias.startswith("#acme.")
    # A remote user cannot get in by alias (as if it did not exist) nor by id.
    status, body = bob.request("POST", f"{V3}/join/{quote(alias)}", {})
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    missing = bob.request("POST", f"{V3}/join/{quote(alias.replace('#acme.', '#acme.nothing'))}", {})
    assert (status, body["errcode"]) == (missing[0], missing[1]["errcode"])
    status, body = bob.request("POST", f"{V3}/join/{quote(room_id)}?server_name={quote(a.server_name)}", {})
    assert status in (403, 404), body
    # Nor be invited into it; and the tenant's user reaches no other server's room or user.
    status, body = acme.request("POST", f"{V3}/rooms/{room_id}/invite", {"user_id": bob.user_id})
    assert status == 403, body
    bobs_room = _room(bob)
    status, body = acme.request("POST", f"{V3}/join/{quote(bobs_room)}?server_name={quote(b.server_name)}", {})
    assert status == 403, body
    status, body = bob.request("POST", f"{V3}/rooms/{bobs_room}/invite", {"user_id": acme.user_id})
    assert status == 403, body
    assert acme.request("GET", f"{V3}/profile/{quote(bob.user_id)}")[0] == 404
    # The room's members never changed.
    status, members = acme.request("GET", f"{V3}/rooms/{room_id}/joined_members")
    assert list(members["joined"]) == [acme.user_id]


def test_a_join_sent_straight_to_a_closed_room_is_rejected(world):
    a, b, admin = world
    acme = user(a, _name("acme"), tenant="acme", admin=admin)
    room_id = _room(acme)
    status, state = acme.request("GET", f"{V3}/rooms/{room_id}/state")
    ids = {e["type"]: e["event_id"] for e in state if e.get("state_key") == ""}
    status, page = acme.request("GET", f"{V3}/rooms/{room_id}/messages?dir=b&limit=1")
    rv = KNOWN_ROOM_VERSIONS["12"]
    intruder = f"@intruder:{b.server_name}"
    pdu = {"room_id": room_id, "sender": intruder, "type": "m.room.member", "state_key": intruder,
           "content": {"membership": "join"}, "depth": 50, "prev_events": [page["chunk"][0]["event_id"]],
           "auth_events": [ids["m.room.power_levels"], ids["m.room.join_rules"]],
           "origin_server_ts": int(time.time() * 1000)}
    add_content_hash(pdu)
    sign_event(pdu, rv, b.server_name, b.signing_key())
    status, body = FedHttp(a).request("PUT", f"{F1}/send/{_name('t')}", {
        "origin": b.server_name, "origin_server_ts": 0, "pdus": [pdu]}, sign_as=b)
    assert status == 200
    assert "federation" in body["pdus"][compute_event_id(pdu, rv)]["error"]
    status, members = acme.request("GET", f"{V3}/rooms/{room_id}/joined_members")
    assert list(members["joined"]) == [acme.user_id]


def test_federated_tenant_keeps_its_wall_on_both_sides(world):
    a, b, admin = world
    globex = user(a, _name("globex"), tenant="globex", admin=admin)
    acme = user(a, _name("acme"), tenant="acme", admin=admin)
    bob = user(b, _name("bob"))
    room_id, alias = _room_and_alias(globex, room_alias_name=_name("globexroom"))
    # Open to federation: B's user joins by the alias, and they talk.
    assert bob.request("POST", f"{V3}/join/{quote(alias)}", {})[0] == 200
    status, _ = globex.request("PUT", f"{V3}/rooms/{room_id}/send/m.room.message/m1",
                               {"msgtype": "m.text", "body": "hello partner"})
    wait_for(lambda: "hello partner" in bodies(bob, room_id), what="the message on B")
    # The tenant's users may join B's rooms; such a room belongs to their tenant here,
    # so another tenant's user of this server still cannot get in.
    bobs_room = _room(bob)
    status, body = globex.request("POST", f"{V3}/join/{quote(bobs_room)}?server_name={quote(b.server_name)}", {})
    assert status == 200, body
    status, body = acme.request("POST", f"{V3}/join/{quote(bobs_room)}?server_name={quote(b.server_name)}", {})
    assert status == 403, body
    assert acme.request("GET", f"{V3}/rooms/{bobs_room}/messages?dir=b")[0] == 403


def test_servers_without_members_get_nothing(world):
    a, b, admin = world
    alice = user(a, _name("alice"))
    room_id = _room(alice, name="Private matters")
    status, page = alice.request("GET", f"{V3}/rooms/{room_id}/messages?dir=b&limit=1")
    event_id = page["chunk"][0]["event_id"]
    fed = FedHttp(a)
    checks = [
        ("GET", f"{F1}/event/{quote(event_id)}", None),
        ("GET", f"{F1}/state/{quote(room_id)}?event_id={quote(event_id)}", None),
        ("GET", f"{F1}/state_ids/{quote(room_id)}?event_id={quote(event_id)}", None),
        ("GET", f"{F1}/event_auth/{quote(room_id)}/{quote(event_id)}", None),
        ("GET", f"{F1}/backfill/{quote(room_id)}?v={quote(event_id)}&limit=10", None),
        ("POST", f"{F1}/get_missing_events/{quote(room_id)}", {"earliest_events": [], "latest_events": [event_id]}),
    ]
    for method, path, body in checks:
        status, answer = fed.request(method, path, body, sign_as=b)
        assert status in (403, 404), (path, answer)
        assert "Private matters" not in str(answer)


def test_server_acl_shuts_a_server_out(world):
    a, b, admin = world
    alice, bob = user(a, _name("alice")), user(b, _name("bob"))
    room_id = _room(alice)
    assert bob.request("POST", f"{V3}/join/{quote(room_id)}?server_name={quote(a.server_name)}", {})[0] == 200
    status, _ = bob.request("PUT", f"{V3}/rooms/{room_id}/send/m.room.message/b1", {"msgtype": "m.text",
                                                                                   "body": "before the ACL"})
    wait_for(lambda: "before the ACL" in bodies(alice, room_id), what="B's message on A")
    # ACLs name hosts without ports, and both test servers are 127.0.0.1: denying it
    # shuts B out of A's view of the room (A's own events are its own business).
    status, body = alice.request("PUT", f"{V3}/rooms/{room_id}/state/m.room.server_acl",
                                 {"allow": ["*"], "deny": ["127.0.0.1"], "allow_ip_literals": True})
    assert status == 200, body
    status, _ = bob.request("PUT", f"{V3}/rooms/{room_id}/send/m.room.message/b2", {"msgtype": "m.text",
                                                                                   "body": "after the ACL"})
    time.sleep(2)
    assert "after the ACL" not in bodies(alice, room_id)
    status, answer = FedHttp(a).request("GET", f"{F1}/state_ids/{quote(room_id)}?event_id={quote(room_id)}",
                                        sign_as=b)
    assert status == 403


def test_history_visibility_follows_the_state_at_each_event(world):
    """In a room shared with another server the DAG forks: an event made on B without
    knowing that carol had just left on A was sent while carol was (as far as that event's
    state says) still in the room, so carol may see it, though it reached A after her
    leave. Stream order would hide it."""
    import threading
    a, b, _ = world
    for attempt in range(6):
        alice, carol, bob = user(a, _name("alice")), user(a, _name("carol")), user(b, _name("bob"))
        room_id = _room(alice, initial_state=[{"type": "m.room.history_visibility", "state_key": "",
                                               "content": {"history_visibility": "joined"}}])
        for u, server in ((carol, a), (bob, a)):
            assert u.request("POST", f"{V3}/join/{quote(room_id)}?server_name={quote(server.server_name)}", {})[0] == 200
        wait_for(lambda: len(bob.request("GET", f"{V3}/rooms/{room_id}/joined_members")[1].get("joined", {})) == 3,
                 what="everyone in, on B")
        barrier = threading.Barrier(2)
        sent = {}

        def leave():
            barrier.wait()
            carol.request("POST", f"{V3}/rooms/{room_id}/leave", {})

        def talk():
            barrier.wait()
            sent["id"] = bob.request("PUT", f"{V3}/rooms/{room_id}/send/m.room.message/x",
                                     {"msgtype": "m.text", "body": "concurrent"})[1]["event_id"]
        threads = [threading.Thread(target=leave), threading.Thread(target=talk)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wait_for(lambda: "concurrent" in bodies(alice, room_id), what="bob's message on A")
        status, page = carol.request("GET", f"{V3}/rooms/{room_id}/event/{quote(sent['id'])}")
        if _leave_in_ancestry(a, b, room_id, sent["id"], carol.user_id):
            assert status == 404  # no fork: her leave came first, she may not see it
            continue
        assert status == 200 and page["content"]["body"] == "concurrent", page
        return
    pytest.fail("the leave and the message never raced")


def _leave_in_ancestry(a, b, room_id: str, event_id: str, user_id: str) -> bool:
    """Whether the state before the event (as A serves it) has the user left."""
    fed = FedHttp(a)
    status, body = fed.request("GET", f"{F1}/state/{quote(room_id)}?event_id={quote(event_id)}", sign_as=b)
    assert status == 200, body
    for pdu in body["pdus"]:
        if pdu["type"] == "m.room.member" and pdu["state_key"] == user_id:
            return pdu["content"]["membership"] != "join"
    return False
