"""Moving rooms between writers while they run (homeserver/writer_layout.py): a writer
added, and one taken out, with messages flowing in every room; no send fails, nothing
acknowledged is lost, no room ever has two builders (its events form one chain), and
afterwards each room's new events are built by its new writer."""
from __future__ import annotations

import signal
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import pytest

from homeserver.replication import STATE_GROUP_STRIDE
from homeserver.sharding import writer_for_room
from tests.cluster import Cluster
from tests.server_harness import Http, new_user


def _send(user: Http, room_id: str, txn: str, body: str) -> tuple[int, dict]:
    return user.request("PUT", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}"
                        f"/send/m.room.message/{txn}", {"msgtype": "m.text", "body": body})


def _query(cluster: Cluster, sql: str, args: tuple = ()) -> list[tuple]:
    conn = psycopg2.connect(cluster.dsn)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        conn.close()


def _one_chain(cluster: Cluster, rooms: list[str]) -> None:
    """Each room's events descend one line: one event per depth, each citing the one
    before. Two writers building a room at once would both build on the same event."""
    forks = _query(cluster, "SELECT room_id, depth, count(*) FROM events WHERE room_id = ANY(%s)"
                            " GROUP BY room_id, depth HAVING count(*) > 1", (rooms,))
    assert not forks, f"rooms built by two writers at once: {forks[:5]}"
    broken = _query(cluster, "SELECT e.event_id FROM events e JOIN event_edges g ON g.event_id = e.event_id"
                             " JOIN events p ON p.event_id = g.prev_event_id"
                             " WHERE e.room_id = ANY(%s) AND p.depth <> e.depth - 1", (rooms,))
    assert not broken, f"events not built on the latest one: {broken[:5]}"


def _builder_of_new_state(cluster: Cluster, user: Http, room_id: str) -> int:
    """The writer slot that builds the room now: a state event's new state group is
    numbered in its writer's residue class."""
    status, body = user.request("PUT", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}"
                                f"/state/m.room.topic/", {"topic": f"built at {time.monotonic()}"})
    assert status == 200, body
    [(group,)] = _query(cluster, "SELECT state_group FROM events WHERE event_id = %s", (body["event_id"],))
    return group % STATE_GROUP_STRIDE


class _Traffic:
    """Messages in every room from several threads until stopped; what was acknowledged
    and what failed."""

    def __init__(self, url: str, token: str, rooms: list[str], threads: int = 6) -> None:
        self.url, self.token, self.rooms, self.threads = url, token, rooms, threads
        self.acked: dict[str, list[str]] = {r: [] for r in rooms}
        self.failed: list[tuple[int, dict]] = []
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(threads)

    def __enter__(self) -> "_Traffic":
        for n in range(self.threads):
            self._pool.submit(self._run, n)
        return self

    def _run(self, n: int) -> None:
        user = Http(self.url, self.token)
        i = 0
        while not self._stop.is_set():
            room = self.rooms[(i * self.threads + n) % len(self.rooms)]
            text = f"t{n}-{i}"
            status, body = _send(user, room, f"m{n}x{i}", text)
            if status == 200:
                self.acked[room].append(text)
            else:
                self.failed.append((status, body))
            i += 1

    def count(self) -> int:
        return sum(len(v) for v in self.acked.values())

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True)


def _stored_bodies(cluster: Cluster, room_id: str) -> set[str]:
    rows = _query(cluster, "SELECT json::json->'content'->>'body' FROM events"
                           " WHERE room_id = %s AND type = 'm.room.message'", (room_id,))
    return {r[0] for r in rows}


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path / "c")
    try:
        c.start()
        yield c
    finally:
        c.stop()


def test_writers_join_and_leave_while_messages_flow(cluster, unique):
    url = cluster.url(cluster.clients[0])
    alice = new_user(url, unique("a"))
    rooms: list[str] = []
    # At least 12 rooms, and enough that some move to the new writer (a third of them do).
    while len(rooms) < 12 or sum(writer_for_room(r, ["w1", "w2", "w3"]) == "w3" for r in rooms) < 2:
        status, room = alice.request("POST", "/_matrix/client/v3/createRoom", {"preset": "private_chat"})
        assert status == 200, room
        rooms.append(room["room_id"])
        assert len(rooms) < 100
    shown = cluster.writers_command()
    assert shown.returncode == 0 and "layout 1: w1, w2" in shown.stdout, shown.stdout + shown.stderr

    # A third writer joins: about a third of the rooms move to it while messages flow.
    cluster.add_writer("w3")
    moving = [r for r in rooms if writer_for_room(r, ["w1", "w2", "w3"]) == "w3"]
    with _Traffic(url, alice.token, rooms) as traffic:
        time.sleep(1.0)
        before = traffic.count()
        moved = cluster.writers_command("--set", "w1,w2,w3")
        after_move = traffic.count()
        time.sleep(1.0)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert "layout 2: w1, w2, w3" in moved.stdout and "done" in moved.stdout, moved.stdout
    assert not traffic.failed, f"{len(traffic.failed)} sends failed during the move: {traffic.failed[:3]}"
    assert after_move > before and traffic.count() > after_move, "messages stopped around the move"
    for room in rooms:
        missing = set(traffic.acked[room]) - _stored_bodies(cluster, room)
        assert not missing, f"{len(missing)} acknowledged messages lost in {room}"
    _one_chain(cluster, rooms)
    slots = {"w1": 0, "w2": 1, "w3": 2}
    for room in rooms:
        assert _builder_of_new_state(cluster, alice, room) == slots[writer_for_room(room, ["w1", "w2", "w3"])]

    # w2 leaves: its rooms move to w1 and w3, then it can be stopped.
    with _Traffic(url, alice.token, rooms) as traffic:
        time.sleep(0.5)
        left = cluster.writers_command("--set", "w1,w3")
        time.sleep(0.5)
    assert left.returncode == 0, left.stdout + left.stderr
    assert not traffic.failed, f"{len(traffic.failed)} sends failed during the move: {traffic.failed[:3]}"
    cluster.procs["w2"].stop()
    for room in rooms:
        assert _builder_of_new_state(cluster, alice, room) == slots[writer_for_room(room, ["w1", "w3"])]
        missing = set(traffic.acked[room]) - _stored_bodies(cluster, room)
        assert not missing, f"{len(missing)} acknowledged messages lost in {room}"
    _one_chain(cluster, rooms)
    # New rooms go to the writers of the layout only.
    for _ in range(4):
        status, room = alice.request("POST", "/_matrix/client/v3/createRoom", {})
        assert status == 200, room
        assert writer_for_room(room["room_id"], ["w1", "w3"]) in ("w1", "w3")
        status, body = _send(alice, room["room_id"], unique("n"), "in a new room")
        assert status == 200, body


def test_rooms_of_a_killed_writer_move_to_the_others(cluster, unique):
    url = cluster.url(cluster.clients[0])
    alice = new_user(url, unique("a"))
    rooms = []
    while len({writer_for_room(r, cluster.writers) for r in rooms}) < 2 or len(rooms) < 4:
        status, room = alice.request("POST", "/_matrix/client/v3/createRoom", {})
        assert status == 200, room
        rooms.append(room["room_id"])
    victim_rooms = [r for r in rooms if writer_for_room(r, cluster.writers) == "w2"]
    cluster.procs["w2"].kill()  # SIGKILL: it never releases
    # Sends to its rooms fail while nobody builds them...
    status, _ = _send(alice, victim_rooms[0], unique("x"), "nobody builds this")
    assert status == 503
    # ...until the layout passes them to w1, which finds no session of w2 and takes them.
    moved = cluster.writers_command("--set", "w1", "--no-wait")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    started = time.monotonic()
    for room in victim_rooms:
        status, body = _send(alice, room, unique("y"), "built by w1")
        assert status == 200, body
    assert time.monotonic() - started < 15
    _one_chain(cluster, rooms)
    for room in rooms:
        assert _builder_of_new_state(cluster, alice, room) == 0
    # The killed writer comes back: it finds its release recorded and builds none of them.
    cluster.restart("w2")
    assert "moving rooms" not in cluster.writers_command().stdout
    status, body = _send(alice, victim_rooms[0], unique("z"), "still w1's")
    assert status == 200, body
    assert _builder_of_new_state(cluster, alice, victim_rooms[0]) == 0
    _one_chain(cluster, rooms)


def test_a_layout_naming_an_unknown_writer_is_refused(cluster):
    refused = cluster.writers_command("--set", "w1,w9")
    assert refused.returncode == 1
    assert "w9 never started as a writer" in refused.stderr
    assert "layout 1: w1, w2" in cluster.writers_command().stdout


def test_a_gained_room_waits_for_its_old_writer_to_release_it(cluster, unique):
    url = cluster.url(cluster.clients[0])
    alice = new_user(url, unique("a"))
    after = ["w1", "w2", "w3"]
    rooms: list[str] = []
    while not any(writer_for_room(r, ["w1", "w2"]) == "w1" and writer_for_room(r, after) == "w3" for r in rooms):
        status, room = alice.request("POST", "/_matrix/client/v3/createRoom", {})
        assert status == 200, room
        rooms.append(room["room_id"])
        assert len(rooms) < 100
    cluster.add_writer("w3")
    from_w1 = [r for r in rooms if writer_for_room(r, cluster.writers[:2]) == "w1" and writer_for_room(r, after) == "w3"]
    w1 = cluster.procs["w1"].proc
    # Alive (its sessions stay) but deaf: it cannot release yet. (A frozen writer holds back
    # every reader's stream position too, as it would without a move: not tried here.)
    w1.send_signal(signal.SIGSTOP)
    try:
        assert cluster.writers_command("--set", ",".join(after), "--no-wait").returncode == 0
        held: list[tuple[int, dict]] = []
        sender = threading.Thread(target=lambda: held.append(_send(alice, from_w1[0], unique("h"), "held")))
        sender.start()
        sender.join(1.5)
        assert sender.is_alive(), f"w3 built a room w1 had not released: {held}"
        stored = _query(cluster, "SELECT count(*) FROM events WHERE room_id = %s"
                                 " AND json::json->'content'->>'body' = 'held'", (from_w1[0],))
        assert stored == [(0,)], "w3 built a room w1 had not released"
    finally:
        w1.send_signal(signal.SIGCONT)
    sender.join(15)
    assert held and held[0][0] == 200, held
    assert _builder_of_new_state(cluster, alice, from_w1[0]) == 2
    _one_chain(cluster, rooms)


def test_a_writer_cut_off_from_the_database_cannot_build_a_room_passed_over(cluster, unique):
    """A writer whose sessions are all gone is passed over; if it was only cut off, it
    must not write the rooms it lost when it comes back: its batches find the release
    recorded on its behalf (WriterLayout.fence) and the write goes to the new writer."""
    url = cluster.url(cluster.clients[0])
    alice = new_user(url, unique("a"))
    rooms = []
    while not any(writer_for_room(r, cluster.writers) == "w1" for r in rooms):
        status, room = alice.request("POST", "/_matrix/client/v3/createRoom", {})
        assert status == 200, room
        rooms.append(room["room_id"])
    room_id = next(r for r in rooms if writer_for_room(r, cluster.writers) == "w1")
    w1 = cluster.procs["w1"].proc
    w1.send_signal(signal.SIGSTOP)
    try:
        _query(cluster, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'hs:w1'")
        assert cluster.writers_command("--set", "w2", "--no-wait").returncode == 0
        status, body = _send(alice, room_id, unique("n"), "built by w2")
        assert status == 200, body
        # A write already on its way to w1, which it reads as soon as it runs again, before
        # it has heard of the new layout.
        straight = Http(f"http://127.0.0.1:{cluster.internal_ports['w1']}", alice.token)
        late: list = []
        sender = threading.Thread(target=lambda: late.append(straight.request(
            "PUT", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/send/m.room.message/{unique('l')}",
            {"msgtype": "m.text", "body": "sent to w1"},
            headers={"X-Homeserver-Internal": cluster.secret, "X-Homeserver-Forwarded": "test"})))
        sender.start()
        time.sleep(0.5)
    finally:
        w1.send_signal(signal.SIGCONT)
    sender.join(30)
    assert late and late[0][0] in (200, 503), late
    _one_chain(cluster, [room_id])
    if late[0][0] == 200:
        [(count,)] = _query(cluster, "SELECT count(*) FROM events WHERE event_id = %s", (late[0][1]["event_id"],))
        assert count == 1
    assert _builder_of_new_state(cluster, alice, room_id) == 1
