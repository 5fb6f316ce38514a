"""Several sync processes (sync/stream_followers.py): sync2 serves /sync beside sync1, the
stream owner. A user long-polling sync2 gets everything a user of the owner gets, at once:
messages, receipts, typing, account data, to-device messages, device-list changes and
presence, all written through other processes; a token from one sync process is good on
the other; a follower that restarts catches up from the tables."""
from __future__ import annotations

import time
import urllib.parse

import pytest

from tests.cluster import Cluster
from tests.server_harness import Http, pair_in_room


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("followers"), readers=["sync2"],
                extra_config="presence:\n  offline_after_ms: 60000\n")
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def _sync_until(user: Http, since: str, found, within: float = 5.0) -> tuple[dict, str, float]:
    """Long-polls (for longer than `within`: an answer before it was woken) until
    `found(body)` holds: (that body, its next_batch, seconds taken)."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        status, body = user.request("GET", f"/_matrix/client/v3/sync?timeout={int(within * 2000)}&since={_q(since)}")
        assert status == 200, body
        since = body["next_batch"]
        if found(body):
            return body, since, time.monotonic() - started
    raise AssertionError(f"not seen within {within} s")


def _ephemeral(body: dict, room_id: str, kind: str) -> list[dict]:
    room = body.get("rooms", {}).get("join", {}).get(room_id, {})
    return [e for e in room.get("ephemeral", {}).get("events", []) if e["type"] == kind]


def _timeline(body: dict, room_id: str) -> list[str]:
    room = body.get("rooms", {}).get("join", {}).get(room_id, {})
    return [e["content"].get("body") for e in room.get("timeline", {}).get("events", [])
            if e["type"] == "m.room.message"]


def _setup(cluster: Cluster, unique) -> tuple[Http, Http, str, Http, str]:
    url = cluster.url(cluster.clients[0])
    alice, bob, room_id = pair_in_room(url, unique("a"), unique("b"))
    bob_on_sync2 = Http(cluster.url("sync2"), bob.token)
    status, first = bob_on_sync2.request("GET", "/_matrix/client/v3/sync?timeout=0")
    assert status == 200, first
    return alice, bob, room_id, bob_on_sync2, first["next_batch"]


def test_every_stream_reaches_a_long_poll_on_a_follower(cluster, unique):
    alice, bob, room_id, bob2, since = _setup(cluster, unique)
    # A message (replicated events).
    status, sent = alice.request("PUT", f"/_matrix/client/v3/rooms/{_q(room_id)}/send/m.room.message/{unique('t')}",
                                 {"msgtype": "m.text", "body": "hello"})
    assert status == 200, sent
    _, since, took = _sync_until(bob2, since, lambda b: "hello" in _timeline(b, room_id))
    # A read receipt, stored by the stream owner.
    status, _ = alice.request("POST", f"/_matrix/client/v3/rooms/{_q(room_id)}/receipt/m.read/{_q(sent['event_id'])}", {})
    assert status == 200
    body, since, took = _sync_until(bob2, since, lambda b: _ephemeral(b, room_id, "m.receipt"))
    receipt = _ephemeral(body, room_id, "m.receipt")[0]["content"]
    assert alice.user_id in receipt[sent["event_id"]]["m.read"]
    assert took < 3
    # Typing, which lives in the owner's memory.
    status, _ = alice.request("PUT", f"/_matrix/client/v3/rooms/{_q(room_id)}/typing/{_q(alice.user_id)}",
                              {"typing": True, "timeout": 30000})
    assert status == 200
    body, since, _ = _sync_until(bob2, since, lambda b: any(
        alice.user_id in e["content"]["user_ids"] for e in _ephemeral(b, room_id, "m.typing")))
    status, _ = alice.request("PUT", f"/_matrix/client/v3/rooms/{_q(room_id)}/typing/{_q(alice.user_id)}",
                              {"typing": False})
    assert status == 200
    body, since, _ = _sync_until(bob2, since, lambda b: any(
        e["content"]["user_ids"] == [] for e in _ephemeral(b, room_id, "m.typing")))
    # bob's own account data, written through the follower (forwarded to the owner).
    status, _ = bob2.request("PUT", f"/_matrix/client/v3/user/{_q(bob.user_id)}/account_data/org.example.x",
                             {"n": 1})
    assert status == 200
    _, since, _ = _sync_until(bob2, since, lambda b: any(
        e["type"] == "org.example.x" for e in b.get("account_data", {}).get("events", [])))
    # A to-device message from alice to bob's device.
    status, _ = alice.request("PUT", f"/_matrix/client/v3/sendToDevice/org.example.ping/{unique('d')}",
                              {"messages": {bob.user_id: {bob.device_id: {"ping": 1}}}})
    assert status == 200
    _, since, _ = _sync_until(bob2, since, lambda b: any(
        e["type"] == "org.example.ping" for e in b.get("to_device", {}).get("events", [])))
    # alice's keys change: bob is told to look again.
    status, _ = alice.request("POST", "/_matrix/client/v3/keys/upload", {"device_keys": {
        "user_id": alice.user_id, "device_id": alice.device_id, "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
        "keys": {f"curve25519:{alice.device_id}": "k"}, "signatures": {}}})
    assert status == 200
    _, since, _ = _sync_until(bob2, since, lambda b: alice.user_id in b.get("device_lists", {}).get("changed", []))
    # Presence, kept by the stream owner and mirrored here.
    status, _ = alice.request("PUT", f"/_matrix/client/v3/presence/{_q(alice.user_id)}/status",
                              {"presence": "unavailable", "status_msg": "away"})
    assert status == 200
    _sync_until(bob2, since, lambda b: any(
        e["sender"] == alice.user_id and e["content"].get("status_msg") == "away"
        for e in b.get("presence", {}).get("events", [])))


def test_a_token_is_good_on_either_sync_process(cluster, unique):
    alice, bob, room_id, bob2, since = _setup(cluster, unique)
    bob1 = Http(cluster.url(cluster.sync), bob.token)
    for n, (reader, other) in enumerate(((bob2, bob1), (bob1, bob2))):
        status, _ = alice.request("PUT", f"/_matrix/client/v3/rooms/{_q(room_id)}/send/m.room.message/{unique('t')}",
                                  {"msgtype": "m.text", "body": f"first {n}"})
        assert status == 200
        body, since, _ = _sync_until(reader, since, lambda b, n=n: f"first {n}" in _timeline(b, room_id))
        status, _ = alice.request("PUT", f"/_matrix/client/v3/rooms/{_q(room_id)}/send/m.room.message/{unique('t')}",
                                  {"msgtype": "m.text", "body": f"second {n}"})
        assert status == 200
        # The other process, from the first one's token: the second message only, in its
        # first answer, and a position no lower than the token's.
        status, body = other.request("GET", f"/_matrix/client/v3/sync?timeout=5000&since={_q(since)}")
        assert status == 200, body
        assert _timeline(body, room_id) == [f"second {n}"], body
        assert all(int(a) >= int(b) for a, b in zip(body["next_batch"][1:].split("_"), since[1:].split("_")))
        since = body["next_batch"]


def test_unread_counts_and_own_writes_on_a_follower(cluster, unique):
    alice, bob, room_id, bob2, since = _setup(cluster, unique)
    sent = []
    for n in range(2):
        status, body = alice.request("PUT", f"/_matrix/client/v3/rooms/{_q(room_id)}/send/m.room.message/{unique('t')}",
                                     {"msgtype": "m.text", "body": f"unread {n}"})
        assert status == 200
        sent.append(body["event_id"])
    body, since, _ = _sync_until(bob2, since, lambda b: "unread 1" in _timeline(b, room_id))
    counts = body["rooms"]["join"][room_id]["unread_notifications"]
    assert counts.get("notification_count") == 2, counts
    # bob reads them through his sync process, which forwards the receipt to the owner and
    # answers once it has read it back: his next sync there, at once, has the counts down.
    status, _ = bob2.request("POST", f"/_matrix/client/v3/rooms/{_q(room_id)}/receipt/m.read/{_q(sent[-1])}", {})
    assert status == 200
    status, body = bob2.request("GET", f"/_matrix/client/v3/sync?timeout=0&since={_q(since)}")
    assert status == 200, body
    room = body["rooms"]["join"][room_id]
    assert room["unread_notifications"].get("notification_count") == 0, room
    assert [e["type"] for e in room["ephemeral"]["events"]] == ["m.receipt"]


def test_a_follower_catches_up_after_a_restart(cluster, unique):
    alice, bob, room_id, bob2, since = _setup(cluster, unique)
    cluster.procs["sync2"].stop()
    status, sent = alice.request("PUT", f"/_matrix/client/v3/rooms/{_q(room_id)}/send/m.room.message/{unique('t')}",
                                 {"msgtype": "m.text", "body": "while sync2 was down"})
    assert status == 200
    assert alice.request("POST", f"/_matrix/client/v3/rooms/{_q(room_id)}/receipt/m.read/{_q(sent['event_id'])}",
                         {})[0] == 200
    bob1 = Http(cluster.url(cluster.sync), bob.token)
    assert bob1.request("PUT", f"/_matrix/client/v3/user/{_q(bob.user_id)}/account_data/org.example.y",
                        {"n": 2})[0] == 200
    cluster.restart("sync2")
    body, _, _ = _sync_until(bob2, since, lambda b: "while sync2 was down" in _timeline(b, room_id))
    # All of it in one answer: the follower started at the owner's positions.
    assert _ephemeral(body, room_id, "m.receipt")
    assert any(e["type"] == "org.example.y" for e in body.get("account_data", {}).get("events", []))
