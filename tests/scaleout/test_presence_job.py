"""Presence as a job of its own (sync/presence_job.py): kept by a client process while
the sync process, which owns the per-user streams and serves /sync, mirrors it. A status
set anywhere wakes a long-poll on the sync process; syncing there makes a user online,
stopping makes them offline (the job's sweep, from what the sync process reports);
sending a message marks the sender active; the positions survive a restart of the sync
process."""
from __future__ import annotations

import threading
import time
import urllib.parse

import pytest

from tests.cluster import Cluster
from tests.server_harness import Http, pair_in_room

JOB = "client1"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("presence"),
                extra_config=f"  jobs:\n    presence: {JOB}\n"
                             "presence:\n  offline_after_ms: 1500\n  idle_after_ms: 600000\n")
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _presence_of(events: list[dict], user_id: str) -> list[dict]:
    return [e["content"] for e in events if e["type"] == "m.presence" and e["sender"] == user_id]


def _sync_until(user: Http, since: str, user_id: str, want, within: float = 10.0) -> tuple[dict, str]:
    """Long-polls on `user`'s process until a presence event of `user_id` satisfies `want`."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        status, body = user.request(
            "GET", f"/_matrix/client/v3/sync?timeout={int(within * 2000)}&since={urllib.parse.quote(since)}")
        assert status == 200, body
        since = body["next_batch"]
        for content in _presence_of(body.get("presence", {}).get("events", []), user_id):
            if want(content):
                return content, since
    raise AssertionError(f"no presence of {user_id} matching within {within} s")


def _pair_on_the_sync_process(cluster, unique) -> tuple[Http, Http, Http, dict, str]:
    """(alice, alice on the sync process, bob there, bob's first sync, their room)."""
    alice, bob, room_id = pair_in_room(cluster.url(cluster.clients[0]), unique("a"), unique("b"))
    bob_on_sync = Http(cluster.url(cluster.sync), bob.token)
    status, first = bob_on_sync.request("GET", "/_matrix/client/v3/sync?timeout=0")
    assert status == 200, first
    return alice, Http(cluster.url(cluster.sync), alice.token), bob_on_sync, first, room_id


def test_status_set_through_the_job_wakes_a_long_poll_on_the_sync_process(cluster, unique):
    url = cluster.url(cluster.clients[0])
    alice, bob, _ = pair_in_room(url, unique("a"), unique("b"))
    bob_on_sync = Http(cluster.url(cluster.sync), bob.token)
    status, first = bob_on_sync.request("GET", "/_matrix/client/v3/sync?timeout=0")
    assert status == 200, first
    started = time.monotonic()
    # Sent to the sync process (where the proxy sends it), which forwards it to the job.
    alice_on_sync = Http(cluster.url(cluster.sync), alice.token)
    status, body = alice_on_sync.request(
        "PUT", f"/_matrix/client/v3/presence/{urllib.parse.quote(alice.user_id)}/status",
        {"presence": "unavailable", "status_msg": "in a meeting"})
    assert status == 200, body
    _sync_until(bob_on_sync, first["next_batch"], alice.user_id,
                lambda c: c["presence"] == "unavailable" and c.get("status_msg") == "in a meeting", within=3)
    assert time.monotonic() - started < 3
    # Read where it is kept, through any process.
    for base in (cluster.url(cluster.sync), url):
        status, got = Http(base, bob.token).request(
            "GET", f"/_matrix/client/v3/presence/{urllib.parse.quote(alice.user_id)}/status")
        assert status == 200 and got["presence"] == "unavailable" and got["status_msg"] == "in a meeting", got


def test_set_presence_on_sync_is_reported_to_the_job(cluster, unique):
    alice, alice_on_sync, bob_on_sync, first, _ = _pair_on_the_sync_process(cluster, unique)
    assert alice_on_sync.request("GET", "/_matrix/client/v3/sync?timeout=0&set_presence=unavailable")[0] == 200
    _, since = _sync_until(bob_on_sync, first["next_batch"], alice.user_id, lambda c: c["presence"] == "unavailable")
    # The same client syncing without it again: online, as with one process.
    assert alice_on_sync.request("GET", "/_matrix/client/v3/sync?timeout=0")[0] == 200
    _sync_until(bob_on_sync, since, alice.user_id, lambda c: c["presence"] == "online")


def test_syncing_makes_a_user_online_and_stopping_offline(cluster, unique):
    alice, alice_on_sync, bob_on_sync, first, room_id = _pair_on_the_sync_process(cluster, unique)
    # Active from creating the room, she goes offline once idle past offline_after_ms.
    _, since = _sync_until(bob_on_sync, first["next_batch"], alice.user_id, lambda c: c["presence"] == "offline")
    # alice syncs on the sync process: reported to the job, which makes her online.
    assert alice_on_sync.request("GET", "/_matrix/client/v3/sync?timeout=0")[0] == 200
    _, since = _sync_until(bob_on_sync, since, alice.user_id, lambda c: c["presence"] == "online")
    # She stops: the next report leaves her out and the job's sweep makes her offline.
    _, since = _sync_until(bob_on_sync, since, alice.user_id, lambda c: c["presence"] == "offline", within=20)
    # A message marks its sender active (the job replays every writer's events).
    status, body = alice.request("PUT", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/send/"
                                        f"m.room.message/{unique('t')}", {"msgtype": "m.text", "body": "hi"})
    assert status == 200, body
    active, since = _sync_until(bob_on_sync, since, alice.user_id, lambda c: c["presence"] == "online")
    assert active["last_active_ago"] < 10_000


def test_presence_positions_survive_a_restart_of_the_sync_process(cluster, unique):
    url = cluster.url(cluster.clients[0])
    alice, bob, _ = pair_in_room(url, unique("a"), unique("b"))
    bob_on_sync = Http(cluster.url(cluster.sync), bob.token)
    status, first = bob_on_sync.request("GET", "/_matrix/client/v3/sync?timeout=0")
    assert status == 200
    cluster.procs[cluster.sync].stop()
    status, _ = alice.request("PUT", f"/_matrix/client/v3/presence/{urllib.parse.quote(alice.user_id)}/status",
                              {"presence": "online", "status_msg": "set while the sync process was down"})
    assert status == 200  # kept by the job, not the stream owner
    cluster.restart(cluster.sync)
    content, since = _sync_until(bob_on_sync, first["next_batch"], alice.user_id,
                                 lambda c: c.get("status_msg") == "set while the sync process was down")
    assert content["presence"] == "online"
    # The positions are the job's: from the new token nothing is sent again (a token the
    # process did not know would get everything).
    status, again = bob_on_sync.request("GET", f"/_matrix/client/v3/sync?timeout=0&since={urllib.parse.quote(since)}")
    assert status == 200
    assert not _presence_of(again.get("presence", {}).get("events", []), alice.user_id)


def test_a_restart_of_the_job_makes_nobody_flap(cluster, unique):
    url = cluster.url(cluster.clients[0])
    alice, bob, _ = pair_in_room(url, unique("a"), unique("b"))
    bob_on_sync = Http(cluster.url(cluster.sync), bob.token)
    alice_on_sync = Http(cluster.url(cluster.sync), alice.token)
    assert alice_on_sync.request("GET", "/_matrix/client/v3/sync?timeout=0")[0] == 200
    status, first = bob_on_sync.request("GET", "/_matrix/client/v3/sync?timeout=0")
    _, since = _sync_until(bob_on_sync, first["next_batch"], alice.user_id, lambda c: c["presence"] == "online") \
        if not any(c["presence"] == "online" for c in _presence_of(first.get("presence", {}).get("events", []),
                                                                   alice.user_id)) else (None, first["next_batch"])
    stop = threading.Event()

    def keep_syncing() -> None:  # alice's client, long-polling on the sync process
        token = None
        while not stop.is_set():
            path = "/_matrix/client/v3/sync?timeout=1000" + (f"&since={urllib.parse.quote(token)}" if token else "")
            status, body = alice_on_sync.request("GET", path)
            token = body.get("next_batch", token) if status == 200 else token
    syncing = threading.Thread(target=keep_syncing)
    syncing.start()
    try:
        cluster.procs[JOB].stop()
        cluster.restart(JOB)
        deadline = time.monotonic() + 4
        seen = []
        while time.monotonic() < deadline:
            status, body = bob_on_sync.request("GET", f"/_matrix/client/v3/sync?timeout=1000&since={urllib.parse.quote(since)}")
            assert status == 200
            since = body["next_batch"]
            seen += [c["presence"] for c in _presence_of(body.get("presence", {}).get("events", []), alice.user_id)]
        assert "offline" not in seen, seen
    finally:
        stop.set()
        syncing.join(10)


def test_a_writer_cannot_run_the_presence_job(tmp_path):
    from homeserver.config import WorkerConfig
    with pytest.raises(ValueError, match="jobs.presence"):
        WorkerConfig(instance_name="w1", role="writer", writers=["w1"], streams="s", internal_secret="x" * 20,
                     instances={"w1": "http://a", "s": "http://b"}, jobs={"presence": "w1"})
