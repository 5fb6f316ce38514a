"""Federation under stress: a peer down for a while (FEDERATION_OUTAGE_SECONDS, default
two minutes, between two instances of this server; shorter with Synapse on either side of
the outage, where the point is how each catches up with the other) receives everything
afterwards, in order; a forged signature, a tampered event and an event that fails the
auth rules are each refused without disturbing the room; power-level changes made at once
on both servers converge to the same state, with this server and with Synapse."""
from __future__ import annotations

import os
import threading
import time
import uuid
from urllib.parse import quote

import pytest
from signedjson.key import generate_signing_key

from homeserver.event_hashing import add_content_hash, compute_event_id, sign_event
from homeserver.room_versions import KNOWN_ROOM_VERSIONS
from tests.federation.harness import V3, FedHttp, bodies, federated_pair, user, wait_for
from tests.federation.synapse_harness import SynapseServer, synapse_serving

pytestmark = pytest.mark.timeout(900)

OUTAGE_S = float(os.environ.get("FEDERATION_OUTAGE_SECONDS", "120"))
SYNAPSE_OUTAGE_S = min(OUTAGE_S, 20.0)
F1 = "/_matrix/federation/v1"


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    with federated_pair(tmp_path_factory, "res") as (a, b), \
            synapse_serving(SynapseServer(tmp_path_factory.mktemp("res-synapse"))) as s:
        yield {"a": a, "b": b, "synapse": s}


@pytest.fixture
def pair(servers):
    return servers["a"], servers["b"]


def _shared_room(a, b, alice, bob, **extra) -> str:
    status, room = alice.request("POST", f"{V3}/createRoom", {"preset": "public_chat", **extra})
    assert status == 200, room
    room_id = room["room_id"]
    status, body = bob.request("POST", f"{V3}/join/{quote(room_id)}?server_name={quote(a.server_name)}", {})
    assert status == 200, body
    return room_id


def _send(client, room_id: str, text: str) -> None:
    status, body = client.request("PUT", f"{V3}/rooms/{room_id}/send/m.room.message/{quote(text)}-{time.time()}",
                                  {"msgtype": "m.text", "body": text})
    assert status == 200, body


@pytest.mark.parametrize("sender,down", [("a", "b"), ("a", "synapse"), ("synapse", "a")])
def test_peer_down_receives_everything_in_order(servers, sender, down):
    host, peer = servers[sender], servers[down]
    outage = OUTAGE_S if "synapse" not in (sender, down) else SYNAPSE_OUTAGE_S
    alice, bob = _fresh(host, "olga"), _fresh(peer, "otto")
    room_id = _shared_room(host, peer, alice, bob)
    peer.stop()
    sent = []
    deadline = time.time() + outage
    i = 0
    while time.time() < deadline or i < 30:
        text = f"during the outage {i}"
        _send(alice, room_id, text)
        sent.append(text)
        i += 1
        time.sleep(max(0.0, min(outage / 30, deadline - time.time())))
    peer.start()
    # Its user's client comes back too (a sync): Synapse resumes sending to a server that
    # contacts it (bob's presence), rather than on its own minute-long catch-up timer.
    assert bob.request("GET", f"{V3}/sync?timeout=0")[0] == 200
    wait_for(lambda: sent[-1] in bodies(bob, room_id, 200), timeout=120, what="the last message on the peer")
    wait_for(lambda: bodies(bob, room_id, 200) == sent, timeout=30, what="every message, in order")
    # They arrived as new events (in /sync order too), not as history fetched later.
    status, page = bob.request("GET", f"{V3}/sync?filter=" + quote('{"room":{"timeline":{"limit":200}}}'))
    timeline = [e["content"].get("body") for e in page["rooms"]["join"][room_id]["timeline"]["events"]
                if e["type"] == "m.room.message"]
    assert timeline == sent


def _fresh(server, name: str):
    return user(server, f"{name}{uuid.uuid4().hex[:6]}")


def _pdu(room_id: str, sender: str, prev: str, depth: int, content: dict, etype: str = "m.room.message",
         state_key: str | None = None, auth: list[str] = ()) -> dict:
    pdu = {"room_id": room_id, "sender": sender, "type": etype, "content": content, "depth": depth,
           "prev_events": [prev], "auth_events": list(auth), "origin_server_ts": int(time.time() * 1000)}
    if state_key is not None:
        pdu["state_key"] = state_key
    return pdu


def test_forged_tampered_and_unauthorised_events_are_refused(pair):
    a, b = pair
    alice, bob = user(a, "fiona"), user(b, "fred")
    room_id = _shared_room(a, b, alice, bob, name="Guarded")
    _send(alice, room_id, "ok 1")
    wait_for(lambda: "ok 1" in bodies(bob, room_id), what="the room on B")
    rv = KNOWN_ROOM_VERSIONS["12"]
    fed = FedHttp(a)
    # Build on the room's state as B knows it: prev = the latest event, auth from current state.
    status, state = bob.request("GET", f"{V3}/rooms/{room_id}/state")
    pl = next(e for e in state if e["type"] == "m.room.power_levels")
    member = next(e for e in state if e["type"] == "m.room.member" and e["state_key"] == bob.user_id)
    status, page = bob.request("GET", f"{V3}/rooms/{room_id}/messages?dir=b&limit=1")
    latest = page["chunk"][0]
    key = b.signing_key()

    def signed(pdu: dict, with_key=key) -> dict:
        add_content_hash(pdu)
        sign_event(pdu, rv, b.server_name, with_key)
        return pdu

    def send(*pdus: dict) -> dict:
        txn = f"t{time.time()}"
        status, body = fed.request("PUT", f"{F1}/send/{txn}", {"origin": b.server_name,
                                                               "origin_server_ts": 0, "pdus": list(pdus)}, sign_as=b)
        assert status == 200, body
        return body["pdus"]

    auth = [pl["event_id"], member["event_id"]]
    status, latest_pdu = fed.request("GET", f"{F1}/event/{quote(latest['event_id'])}", sign_as=b)
    depth = latest_pdu["pdus"][0]["depth"] + 1
    forged = signed(_pdu(room_id, bob.user_id, latest["event_id"], depth, {"msgtype": "m.text", "body": "forged"},
                         auth=auth), with_key=generate_signing_key(key.version))
    tampered = signed(_pdu(room_id, bob.user_id, latest["event_id"], depth, {"msgtype": "m.text",
                                                                              "body": "original"}, auth=auth))
    tampered["content"]["body"] = "tampered"  # after hashing and signing
    unauthorised = signed(_pdu(room_id, bob.user_id, latest["event_id"], depth, {"name": "Taken over"},
                               "m.room.name", "", auth=auth))  # bob has no power to rename
    results = send(forged, tampered, unauthorised)
    ids = {name: compute_event_id(p, rv) for name, p in
           (("forged", forged), ("tampered", tampered), ("unauthorised", unauthorised))}
    assert "signature" in results[ids["forged"]]["error"]
    assert "rejected" in results[ids["unauthorised"]]["error"]
    # The tampered event is kept only in its redacted form: nothing it claims is shown.
    assert results[ids["tampered"]] == {}
    status, shown = alice.request("GET", f"{V3}/rooms/{room_id}/event/{quote(ids['tampered'])}")
    assert status == 200 and shown["content"] == {}
    for name in ("forged", "unauthorised"):
        assert alice.request("GET", f"{V3}/rooms/{room_id}/event/{quote(ids[name])}")[0] == 404
    # The room is undisturbed: its name stands and it carries on, both ways.
    assert alice.request("GET", f"{V3}/rooms/{room_id}/state/m.room.name")[1] == {"name": "Guarded"}
    _send(alice, room_id, "ok 2")
    _send(bob, room_id, "ok 3")
    wait_for(lambda: {"ok 2", "ok 3"} <= set(bodies(alice, room_id)), what="the room going on, on A")
    wait_for(lambda: {"ok 2", "ok 3"} <= set(bodies(bob, room_id)), what="the room going on, on B")
    assert "forged" not in bodies(alice, room_id) and "tampered" not in bodies(alice, room_id)


def _pl(client, room_id: str) -> dict:
    status, body = client.request("GET", f"{V3}/rooms/{room_id}/state/m.room.power_levels")
    assert status == 200, body
    return body


@pytest.mark.parametrize("other", ["b", "synapse"])
def test_conflicting_power_level_changes_converge(servers, other):
    a, b = servers["a"], servers[other]
    forked = False
    for attempt in range(5):
        alice, bob = _fresh(a, "pa"), _fresh(b, "pb")
        room_id = _shared_room(a, b, alice, bob)
        levels = _pl(alice, room_id)
        levels["users"][bob.user_id] = 100
        assert alice.request("PUT", f"{V3}/rooms/{room_id}/state/m.room.power_levels", levels)[0] == 200
        wait_for(lambda: _pl(bob, room_id)["users"].get(bob.user_id) == 100, what="bob's power on B")
        base = _pl(alice, room_id)
        ours = {**base, "users": {**base["users"], "@x:elsewhere": 50}, "events_default": 10}
        theirs = {**base, "users": {**base["users"], "@y:elsewhere": 60}, "state_default": 70}
        barrier = threading.Barrier(2)
        ids = {}

        def change(name, client, content):
            barrier.wait()
            ids[name] = client.request("PUT", f"{V3}/rooms/{room_id}/state/m.room.power_levels", content)[1]["event_id"]
        threads = [threading.Thread(target=change, args=("a", alice, ours)),
                   threading.Thread(target=change, args=("b", bob, theirs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # Each side sends a message afterwards, so both have built on the fork.
        _send(alice, room_id, "after on A")
        _send(bob, room_id, "after on B")
        wait_for(lambda: {"after on A", "after on B"} <= set(bodies(alice, room_id)) and
                 {"after on A", "after on B"} <= set(bodies(bob, room_id)), what="both messages on both")
        wait_for(lambda: _pl(alice, room_id) == _pl(bob, room_id), what="the same power levels on both")
        assert _pl(alice, room_id) in (ours, theirs)
        fed = FedHttp(a)
        prevs = []
        for eid in ids.values():
            status, ev = fed.request("GET", f"{F1}/event/{quote(eid)}", sign_as=b)
            assert status == 200, ev
            prevs.append(ev["pdus"][0]["prev_events"])
        if prevs[0] == prevs[1]:
            forked = True  # both built on the same parent: state resolution decided
            break
    assert forked, "the two changes never raced; state resolution was not exercised"
