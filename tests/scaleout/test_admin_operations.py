"""Admin operations and erasure on several processes (docs/scaling.md): what they change
in one process reaches the others without undoing the room writer's own state, a
process starting up fails only the admin tasks it was running, a room deleted without
purging leaves the sync process's /sync, and only the room's writer sends the guests'
leaves. A cluster of its own (one writer, the sync process, a client process; guest
access on), reached without the proxy; some tests restart its processes."""
from __future__ import annotations

import json
import time
import urllib.parse
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Iterator

import psycopg2
import pytest

from tests.cluster import Cluster
from tests.scaleout.test_cluster import _admin, _eventually, _send
from tests.server_harness import Http, new_user

WRITER = "w1"


def _q(value: str) -> str:
    return urllib.parse.quote(value)


@pytest.fixture(scope="module")
def ops(tmp_path_factory) -> Iterator[SimpleNamespace]:
    """The cluster, its client process's URL (where requests enter) and its admin."""
    cluster = Cluster(tmp_path_factory.mktemp("admin-ops"), writers=[WRITER],
                      extra_config="guest_access:\n  enabled: true\n")
    try:
        cluster.start()
        entry = SimpleNamespace(cluster=cluster, base_url=cluster.url(cluster.clients[0]))
        yield SimpleNamespace(cluster=cluster, base_url=entry.base_url, admin=_admin(entry))
    finally:
        cluster.stop()


@contextmanager
def _held(cluster: Cluster, sql: str, params: tuple) -> Iterator[psycopg2.extensions.cursor]:
    """A transaction of the test's own holding the row locks `sql` takes, until the block
    ends (then rolled back): whatever needs those rows waits meanwhile."""
    conn = psycopg2.connect(cluster.dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            assert cur.rowcount == 1, sql
            yield cur
    finally:
        conn.rollback()
        conn.close()


def _waiting_on_a_lock(cluster: Cluster, instance: str) -> bool:
    conn = psycopg2.connect(cluster.dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                        " AND wait_event_type = 'Lock'", (f"hs:{instance}",))
            return cur.fetchone()[0] > 0
    finally:
        conn.close()


def _public_room(owner: Http, *joiners: Http, **body) -> str:
    status, room = owner.request("POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat", **body})
    assert status == 200, room
    for user in joiners:
        status, answer = user.request("POST", f"/_matrix/client/v3/join/{_q(room['room_id'])}", {})
        assert status == 200, answer
    return room["room_id"]


def _event(user: Http, room_id: str, event_id: str) -> dict:
    status, ev = user.request("GET", f"/_matrix/client/v3/rooms/{_q(room_id)}/event/{_q(event_id)}")
    assert status == 200, ev
    return ev


def test_erasure_keeps_the_writers_room_state_under_queued_events(ops, unique):
    """An erasure answered by the client process tells every process to drop the erased
    user's messages. The room's writer must not drop its room head with them: a ban it
    has built but not yet persisted (its batch held back by a row lock the test takes)
    must still hold when the notice has arrived, for the next send and after it. The
    erased message is pruned on the writer and on the client process alike."""
    cluster = ops.cluster
    alice = new_user(ops.base_url, unique("a"))
    bob = new_user(ops.base_url, unique("b"))
    mallory = new_user(ops.base_url, unique("m"))
    room_id = _public_room(alice, bob, mallory)
    status, sent = _send(bob, room_id, unique("t"), "soon erased")
    assert status == 200, sent
    secret = sent["event_id"]
    assert bob.request("POST", f"/_matrix/client/v3/rooms/{_q(room_id)}/leave", {})[0] == 200
    on_writer = Http(cluster.url(WRITER), alice.token)
    for reader in (alice, on_writer):  # both processes hold the message now
        assert _event(reader, room_id, secret)["content"]["body"] == "soon erased"

    with ThreadPoolExecutor(2) as pool, \
            _held(cluster, "SELECT 1 FROM stream_positions WHERE stream = 'events' AND instance = %s FOR UPDATE",
                  (WRITER,)):
        ban: Future = pool.submit(alice.request, "POST", f"/_matrix/client/v3/rooms/{_q(room_id)}/ban",
                                  {"user_id": mallory.user_id})
        # The ban is built and in the writer's head; its batch waits for the lock.
        assert _eventually(lambda: _waiting_on_a_lock(cluster, WRITER), bool, within=10)
        status, body = ops.admin.request("POST", f"/_synapse/admin/v1/deactivate/{_q(bob.user_id)}", {"erase": True})
        assert status == 200, body
        # The writer has acted on the notice once it serves the message pruned.
        pruned = _eventually(lambda: _event(on_writer, room_id, secret), lambda ev: "body" not in ev["content"],
                             within=10)
        assert "body" not in pruned["content"], pruned
        late = pool.submit(_send, mallory, room_id, unique("t"), "banned already")
        try:  # refused at once when the head holds the ban; otherwise queued behind the lock
            status, body = late.result(timeout=5)
            assert status == 403, body
        except TimeoutError:
            pass  # judged below, once the lock is released
    status, body = ban.result(timeout=30)
    assert status == 200, body
    status, body = late.result(timeout=30)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN", "the writer forgot the ban it had queued"
    status, body = _send(mallory, room_id, unique("t"), "still banned")
    assert status == 403, body
    status, member = alice.request("GET", f"/_matrix/client/v3/rooms/{_q(room_id)}/state/m.room.member/{_q(mallory.user_id)}")
    assert status == 200 and member["membership"] == "ban", member
    status, body = _send(alice, room_id, unique("t"), "business as usual")
    assert status == 200, body
    ev = _eventually(lambda: _event(alice, room_id, secret), lambda ev: "body" not in ev["content"])
    assert "body" not in ev["content"], "the client process still serves the erased message"


def _purge_status(admin: Http, purge_id: str) -> str:
    status, body = admin.request("GET", f"/_synapse/admin/v1/purge_history_status/{_q(purge_id)}")
    assert status == 200, body
    return body["status"]


def test_a_process_starting_up_fails_only_its_own_admin_tasks(ops, unique):
    """A history purge runs on the room's writer (held active by a row lock the test takes
    on an event it deletes). Restarting the client process leaves it running, and it
    completes; restarting the writer itself fails the task it interrupted."""
    cluster = ops.cluster
    alice = new_user(ops.base_url, unique("a"))
    room_id = _public_room(alice)
    sent = []
    for i in range(4):
        status, body = _send(alice, room_id, unique("t"), f"old {i}")
        assert status == 200, body
        sent.append(body["event_id"])

    def purge(up_to: str) -> str:
        status, body = ops.admin.request("POST", f"/_synapse/admin/v1/purge_history/{_q(room_id)}",
                                         {"purge_up_to_event_id": up_to, "delete_local_events": True})
        assert status == 200, body
        return body["purge_id"]

    lock_event = "SELECT 1 FROM events WHERE event_id = %s FOR UPDATE"
    with _held(cluster, lock_event, (sent[0],)):
        purge_id = purge(sent[1])
        assert _eventually(lambda: _waiting_on_a_lock(cluster, WRITER), bool, within=10)
        assert _purge_status(ops.admin, purge_id) == "active"
        client = cluster.clients[0]
        cluster.procs[client].stop()
        cluster.restart(client)
        assert _purge_status(ops.admin, purge_id) == "active", "another process's restart failed the task"
    assert _eventually(lambda: _purge_status(ops.admin, purge_id), lambda s: s == "complete",
                       within=10) == "complete"

    with _held(cluster, lock_event, (sent[2],)):
        purge_id = purge(sent[3])
        assert _eventually(lambda: _waiting_on_a_lock(cluster, WRITER), bool, within=10)
        cluster.procs[WRITER].kill()  # the purge dies with it
        cluster.restart(WRITER)
    status, body = ops.admin.request("GET", f"/_synapse/admin/v1/purge_history_status/{_q(purge_id)}")
    assert status == 200 and body == {"status": "failed", "error": "interrupted by a restart"}, body


def _sync_rooms(user: Http, section: str) -> set[str]:
    leave_filter = _q(json.dumps({"room": {"include_leave": True}}))
    status, body = user.request("GET", f"/_matrix/client/v3/sync?timeout=0&filter={leave_filter}")
    assert status == 200, body
    return set(body.get("rooms", {}).get(section, {}))


def test_room_deleted_without_purge_leaves_the_sync_process(ops, unique):
    """Deleting a room without purging it moves its users out and forgets it for them (as
    Synapse does): the sync process, not the writer running the deletion, answers their
    /sync, and leaves the room out even with include_leave."""
    cluster = ops.cluster
    admin = ops.admin
    alice = new_user(ops.base_url, unique("a"))
    bob = new_user(ops.base_url, unique("b"))
    room_id = _public_room(alice, bob)
    bob_on_sync = Http(cluster.url(cluster.sync), bob.token)
    assert room_id in _eventually(lambda: _sync_rooms(bob_on_sync, "join"), lambda found: room_id in found)
    status, body = admin.request("DELETE", f"/_synapse/admin/v2/rooms/{_q(room_id)}", {"purge": False})
    assert status == 200, body
    delete_id = body["delete_id"]

    def delete_status() -> str:
        status, body = admin.request("GET", f"/_synapse/admin/v2/rooms/delete_status/{_q(delete_id)}")
        assert status == 200, body
        return body["status"]
    assert _eventually(delete_status, lambda s: s in ("complete", "failed"), within=10) == "complete"
    assert room_id not in _eventually(lambda: _sync_rooms(bob_on_sync, "leave") | _sync_rooms(bob_on_sync, "join"),
                                      lambda found: room_id not in found)


def _guest(base_url: str) -> Http:
    http = Http(base_url)
    status, me = http.request("POST", "/_matrix/client/v3/register?kind=guest", {})
    assert status == 200, me
    http.token, http.user_id = me["access_token"], me["user_id"]
    return http


def test_only_the_rooms_writer_sends_the_guests_leaves(ops, unique):
    """A room that stops admitting guests sends its guests' leaves once, from its writer:
    the processes replaying the change do not try as well (their tries, refused, would be
    logged as guests that could not leave)."""
    cluster = ops.cluster
    agent = new_user(ops.base_url, unique("agent"))
    guests = [_guest(ops.base_url) for _ in range(3)]
    room_id = _public_room(agent, *guests, initial_state=[
        {"type": "m.room.guest_access", "state_key": "", "content": {"guest_access": "can_join"}}])
    status, body = agent.request("PUT", f"/_matrix/client/v3/rooms/{_q(room_id)}/state/m.room.guest_access",
                                 {"guest_access": "forbidden"})
    assert status == 200, body

    def memberships() -> set[str]:
        found = set()
        for guest in guests:
            status, member = agent.request(
                "GET", f"/_matrix/client/v3/rooms/{_q(room_id)}/state/m.room.member/{_q(guest.user_id)}")
            assert status == 200, member
            found.add(member["membership"])
        return found
    assert _eventually(memberships, lambda found: found == {"leave"}, within=10) == {"leave"}
    time.sleep(1)  # the other processes' replays have run by now
    tries = [line for line in cluster.log_path.read_text().splitlines()
             if room_id in line and ("could not leave" in line or "removing guests" in line)]
    assert tries == [], tries
