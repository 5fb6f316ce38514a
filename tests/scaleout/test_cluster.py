"""The cluster's own behaviour (conftest.py): rooms spread over the writers, a message
written by either writer wakes a long-poll on the sync process, the internal listener
admits only the deployment's processes, and a writer killed mid-burst loses nothing it
acknowledged while the other writer's rooms keep going."""
from __future__ import annotations

import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Iterator


from homeserver.sharding import writer_for_room
from tests.cluster import Cluster
from tests.server_harness import Http, new_user, pair_in_room


def _send(user: Http, room_id: str, txn: str, body: str) -> tuple[int, dict]:
    return user.request("PUT", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}"
                        f"/send/m.room.message/{txn}", {"msgtype": "m.text", "body": body})


def _rooms_on_each_writer(user: Http, writers: list[str], invite: str | None = None,
                          preset: str = "private_chat") -> dict[str, str]:
    """A room owned by each writer (rooms are created round-robin; ids hash to their writer)."""
    found: dict[str, str] = {}
    for _ in range(20):
        body: dict = {"preset": preset}
        if invite:
            body["invite"] = [invite]
        status, room = user.request("POST", "/_matrix/client/v3/createRoom", body)
        assert status == 200, room
        found.setdefault(writer_for_room(room["room_id"], writers), room["room_id"])
        if len(found) == len(writers):
            return found
    raise AssertionError(f"rooms landed on {sorted(found)} only")


def _bob_on_the_sync_process(server, unique) -> tuple[Http, dict[str, str], Http, dict]:
    """(alice, a room of hers on each writer, bob on the sync process, bob's first sync
    there): bob has joined every room; his requests go straight to the sync process (not
    through the proxy)."""
    alice = new_user(server.base_url, unique("a"))
    bob = new_user(server.base_url, unique("b"))
    rooms = _rooms_on_each_writer(alice, server.cluster.writers, invite=bob.user_id)
    for room_id in rooms.values():
        status, body = bob.request("POST", f"/_matrix/client/v3/join/{urllib.parse.quote(room_id)}", {})
        assert status == 200, body
    bob_on_sync = Http(server.cluster.url(server.cluster.sync), bob.token)
    status, first = bob_on_sync.request("GET", "/_matrix/client/v3/sync?timeout=0")
    assert status == 200, first
    return alice, rooms, bob_on_sync, first


def _eventually(call, done, within: float = 2.0):
    """`call()` again until `done(answer)` or `within` seconds pass: what one process
    changes reaches the others when its NOTIFY arrives, milliseconds later."""
    deadline = time.monotonic() + within
    answer = call()
    while not done(answer) and time.monotonic() < deadline:
        time.sleep(0.05)
        answer = call()
    return answer


def _messages(user: Http, room_id: str) -> list[str]:
    bodies, token = [], None
    while True:
        path = f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/messages?dir=b&limit=500"
        if token:
            path += "&from=" + urllib.parse.quote(token)
        status, page = user.request("GET", path)
        assert status == 200, page
        bodies += [e["content"].get("body") for e in page["chunk"] if e["type"] == "m.room.message"]
        token = page.get("end")
        if not token or not page["chunk"]:
            return bodies


def test_rooms_are_created_on_both_writers(server, unique):
    alice = new_user(server.base_url, unique("a"))
    rooms = _rooms_on_each_writer(alice, server.cluster.writers)
    for writer, room_id in rooms.items():
        status, body = _send(alice, room_id, unique("t"), f"to {writer}")
        assert status == 200, body
        assert _messages(alice, room_id) == [f"to {writer}"]


def test_message_through_either_writer_wakes_a_long_poll_on_the_sync_process(server, unique):
    alice, rooms, bob_on_sync, first = _bob_on_the_sync_process(server, unique)
    since = first["next_batch"]
    # The sync process has bob's joins a few milliseconds after the client process did.
    joined = set(first.get("rooms", {}).get("join", {}))
    deadline = time.monotonic() + 10
    while not set(rooms.values()) <= joined and time.monotonic() < deadline:
        status, more = bob_on_sync.request("GET", f"/_matrix/client/v3/sync?timeout=1000&since={since}")
        assert status == 200, more
        joined |= set(more.get("rooms", {}).get("join", {}))
        since = more["next_batch"]
    assert set(rooms.values()) <= joined
    for writer, room_id in rooms.items():
        result: dict = {}

        def poll() -> None:
            result["answer"] = bob_on_sync.request("GET", f"/_matrix/client/v3/sync?timeout=20000&since={since}")
            result["at"] = time.monotonic()
        poller = threading.Thread(target=poll)
        poller.start()
        time.sleep(0.5)  # the long-poll is waiting
        text = f"hello via {writer} {unique('m')}"
        sent_at = time.monotonic()
        status, body = _send(alice, room_id, unique("t"), text)
        assert status == 200, body
        poller.join(25)
        status, answer = result["answer"]
        assert status == 200, answer
        timeline = answer["rooms"]["join"][room_id]["timeline"]["events"]
        assert [e["content"]["body"] for e in timeline if e["type"] == "m.room.message"] == [text]
        assert result["at"] - sent_at < 1.0, f"woken {result['at'] - sent_at:.2f} s after the send"
        since = answer["next_batch"]


def test_internal_listener_wants_the_secret(server, unique):
    cluster = server.cluster
    alice = new_user(server.base_url, unique("a"))
    writer = cluster.writers[0]
    internal = f"http://127.0.0.1:{cluster.internal_ports[writer]}"
    status, body = Http(internal, alice.token).request("GET", "/_matrix/client/v3/account/whoami")
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = Http(internal, alice.token).request(
        "GET", "/_matrix/client/v3/account/whoami", headers={"X-Homeserver-Internal": "not-the-secret"})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = Http(internal, alice.token).request(
        "GET", "/_matrix/client/v3/account/whoami", headers={"X-Homeserver-Internal": cluster.secret})
    assert status == 200 and body["user_id"] == alice.user_id


def test_the_stream_owner_says_who_is_syncing(server, unique):
    """The internal question a pushers job elsewhere asks: only with the secret, and
    malformed questions are refused."""
    cluster = server.cluster
    alice = new_user(server.base_url, unique("a"))
    internal = Http(f"http://127.0.0.1:{cluster.internal_ports[cluster.sync]}", None)
    path, secret = "/_homeserver/internal/v1/syncing", {"X-Homeserver-Internal": cluster.secret}
    status, body = internal.request("POST", path, {"user_id": alice.user_id, "grace_ms": 1000})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    for bad in ({"user_id": alice.user_id}, {"user_id": 5, "grace_ms": 1000}, {"grace_ms": 1000}):
        status, body = internal.request("POST", path, bad, headers=secret)
        assert status == 400 and body["errcode"] == "M_BAD_JSON", (bad, body)
    status, body = internal.request("POST", path, {"user_id": alice.user_id, "grace_ms": 60_000}, headers=secret)
    assert status == 200 and body == {"active": False}
    on_sync = Http(cluster.url(cluster.sync), alice.token)
    assert on_sync.request("GET", "/_matrix/client/v3/sync?timeout=0")[0] == 200
    status, body = internal.request("POST", path, {"user_id": alice.user_id, "grace_ms": 60_000}, headers=secret)
    assert status == 200 and body == {"active": True}  # synced within the last minute


def test_writer_killed_mid_burst_loses_nothing_acknowledged(tmp_path, unique):
    cluster = Cluster(tmp_path / "c")
    try:
        cluster.start()
        url = cluster.url(cluster.clients[0])
        started = time.monotonic()
        alice = new_user(url, unique("a"))  # forwarded to the sync process, on a database with no event yet
        assert time.monotonic() - started < 5, "a forwarded write waited for an event that never came"
        rooms = _rooms_on_each_writer(alice, cluster.writers)
        victim, survivor = cluster.writers
        acked: dict[str, list[str]] = {victim: [], survivor: []}
        stop = threading.Event()

        def burst(writer: str, worker: int) -> None:
            user = Http(url, alice.token)
            i = 0
            while not stop.is_set():
                text = f"{writer}-{worker}-{i}"
                status, _ = _send(user, rooms[writer], f"{writer}{worker}x{i}", text)
                if status == 200:
                    acked[writer].append(text)
                i += 1

        with ThreadPoolExecutor(8) as pool:
            for writer in (victim, survivor):
                for worker in range(4):
                    pool.submit(burst, writer, worker)
            time.sleep(1.5)
            cluster.procs[victim].kill()  # SIGKILL, mid-burst
            killed_at = len(acked[survivor])
            time.sleep(3)
            survived = len(acked[survivor]) - killed_at
            cluster.restart(victim)
            time.sleep(1)
            stop.set()
        assert survived > 20, "the other writer's room stopped while its neighbour was down"
        # Everything acknowledged is there, the killed writer's room serves again.
        for writer, room_id in rooms.items():
            stored = set(_messages(alice, room_id))
            missing = [t for t in acked[writer] if t not in stored]
            assert not missing, f"{len(missing)} acknowledged events lost in {writer}'s room"
        # The killed writer's room serves again, and a long-poll on the sync process gets it.
        on_sync = Http(cluster.url(cluster.sync), alice.token)
        status, synced = on_sync.request("GET", "/_matrix/client/v3/sync")
        assert status == 200
        status, body = _send(alice, rooms[victim], unique("t"), "after the restart")
        assert status == 200, body
        assert "after the restart" in _messages(alice, rooms[victim])
        status, later = on_sync.request("GET", f"/_matrix/client/v3/sync?timeout=5000&since={synced['next_batch']}")
        assert status == 200
        timeline = later["rooms"]["join"][rooms[victim]]["timeline"]["events"]
        assert [e["content"].get("body") for e in timeline] == ["after the restart"]
    finally:
        cluster.stop()


def test_logout_on_the_sync_process_ends_the_token_everywhere(server, unique):
    """Tokens are cached per process; a logout (served by the sync process) tells the
    others at once."""
    cluster = server.cluster
    alice = new_user(server.base_url, unique("a"))
    on_client = Http(cluster.url(cluster.clients[0]), alice.token)
    status, _ = on_client.request("GET", "/_matrix/client/v3/account/whoami")
    assert status == 200  # cached there now
    status, body = Http(cluster.url(cluster.sync), alice.token).request("POST", "/_matrix/client/v3/logout", {})
    assert status == 200, body
    status, body = _eventually(lambda: on_client.request("GET", "/_matrix/client/v3/account/whoami"),
                               lambda answer: answer[0] != 200)
    assert status == 401 and body["errcode"] == "M_UNKNOWN_TOKEN", body


def test_unread_counts_on_the_sync_process_follow_the_writers(server, unique):
    """Push rules run on the room's writer; the sync process takes the stored results
    with the events, so /sync's unread counts go up."""
    alice, rooms, bob_on_sync, first = _bob_on_the_sync_process(server, unique)
    for room_id in rooms.values():
        for i in range(3):
            status, body = _send(alice, room_id, unique("t"), f"ping {i}")
            assert status == 200, body
    # A long-poll answers as soon as the first replayed event arrives: sync on until the
    # counts settle (each response carries a room's whole count, not an increment).
    counts: dict[str, int] = {}
    since, deadline = first["next_batch"], time.monotonic() + 10
    while time.monotonic() < deadline and any(counts.get(r) != 3 for r in rooms.values()):
        status, later = bob_on_sync.request("GET", f"/_matrix/client/v3/sync?timeout=1000&since={since}")
        assert status == 200
        since = later["next_batch"]
        for room_id, entry in later.get("rooms", {}).get("join", {}).items():
            counts[room_id] = entry["unread_notifications"]["notification_count"]
    assert counts == {room_id: 3 for room_id in rooms.values()}


def _admin(server) -> Http:
    """The cluster's server admin (registered through the CLI, logged in through the proxy)."""
    import subprocess
    import sys

    from tests.server_harness import REPO
    cluster = server.cluster
    if not hasattr(cluster, "admin"):
        subprocess.run([sys.executable, "-m", "homeserver.cli", "register-user", "admin", "--password", "adm-pw",
                        "--admin", "--config", str(cluster.procs[cluster.clients[0]].config_path)],
                       cwd=REPO, check=True, capture_output=True)
        status, login = Http(server.base_url).request(
            "POST", "/_matrix/client/v3/login", {"type": "m.login.password", "user": "admin", "password": "adm-pw"})
        assert status == 200, login
        cluster.admin = Http(server.base_url, login["access_token"])
    return cluster.admin


def test_tenant_walls_and_room_blocks_hold_on_every_writer(server, unique):
    """Tenants set on a client process and blocks made there reach the writers, which
    refuse a cross-tenant join exactly as they refuse a join to a missing room."""
    admin = _admin(server)
    alice = new_user(server.base_url, unique("a"))
    mallory = new_user(server.base_url, unique("m"))
    carol = new_user(server.base_url, unique("c"))

    def set_tenant(user: Http, tenant: str) -> None:
        status, body = admin.request("PUT", f"/_homeserver/admin/v1/users/{urllib.parse.quote(user.user_id)}/tenant",
                                     {"tenant_id": tenant})
        assert status == 200, body
    for user in (alice, carol, mallory):
        set_tenant(user, "acme")
    # Every writer learns (and caches) mallory's tenant: she creates a room on each.
    _rooms_on_each_writer(mallory, server.cluster.writers)
    set_tenant(mallory, "globex")  # then she moves to another tenant
    time.sleep(0.3)  # the writers hear of it by NOTIFY, milliseconds later
    rooms = _rooms_on_each_writer(alice, server.cluster.writers, preset="public_chat")
    missing = "!doesnotexist:test.local"
    status, expected = mallory.request("POST", f"/_matrix/client/v3/rooms/{urllib.parse.quote(missing)}/join", {})
    for room_id in rooms.values():
        status_x, body = mallory.request("POST", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/join", {})
        assert (status_x, body["errcode"]) == (status, expected["errcode"]), body
    # A block made through the client process stops joins on the writer.
    victim = next(iter(rooms.values()))
    status, body = admin.request("PUT", f"/_synapse/admin/v1/rooms/{urllib.parse.quote(victim)}/block", {"block": True})
    assert status == 200, body
    time.sleep(0.3)  # likewise
    status, body = carol.request("POST", f"/_matrix/client/v3/rooms/{urllib.parse.quote(victim)}/join", {})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN", body
    other = [r for r in rooms.values() if r != victim]
    for room_id in other:
        status, body = carol.request("POST", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/join", {})
        assert status == 200, body


def test_sync_process_catches_up_after_losing_its_database_sessions(server, unique):
    """Notices sent while a process is not listening are not lost: after reconnecting it
    reads the writers' positions from the table and replays what it missed."""
    import psycopg2

    cluster = server.cluster
    alice = new_user(server.base_url, unique("a"))
    rooms = _rooms_on_each_writer(alice, cluster.writers)
    on_sync = Http(cluster.url(cluster.sync), alice.token)
    status, first = on_sync.request("GET", "/_matrix/client/v3/sync?timeout=0")
    assert status == 200
    conn = psycopg2.connect(cluster.dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
                    (f"hs:{cluster.sync}",))
        assert cur.fetchone()[0] >= 1  # at least its LISTEN session
    conn.close()
    texts = {}
    for writer, room_id in rooms.items():  # sent while the sync process is not listening
        texts[room_id] = f"while away {writer} {unique('m')}"
        status, body = _send(alice, room_id, unique("t"), texts[room_id])
        assert status == 200, body
    seen: dict[str, list[str]] = {r: [] for r in rooms.values()}
    since, deadline = first["next_batch"], time.monotonic() + 15
    while any(texts[r] not in seen[r] for r in seen) and time.monotonic() < deadline:
        status, later = on_sync.request("GET", f"/_matrix/client/v3/sync?timeout=5000&since={since}")
        if status != 200:  # its pool reconnects on the next call
            time.sleep(0.2)
            continue
        since = later["next_batch"]
        for room_id, room in later.get("rooms", {}).get("join", {}).items():
            seen.setdefault(room_id, []).extend(e["content"].get("body") for e in room["timeline"]["events"])
    for room_id, text in texts.items():
        assert text in seen[room_id], f"{text!r} never reached the sync process"


def test_replication_positions_are_metrics(server, unique):
    import re
    import urllib.request
    cluster = server.cluster
    alice = new_user(server.base_url, unique("a"))
    rooms = _rooms_on_each_writer(alice, cluster.writers)
    for room_id in rooms.values():
        assert _send(alice, room_id, unique("t"), "counted")[0] == 200
    url = f"http://127.0.0.1:{cluster.internal_ports[cluster.sync]}/metrics"  # the cluster's metrics listener
    deadline = time.monotonic() + 5
    while True:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        values = dict(re.findall(r'^(homeserver_replication_\w+(?:\{writer="\w+"\})?) (\S+)$', text, re.M))
        if float(values["homeserver_replication_behind"]) == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert float(values["homeserver_replication_behind"]) == 0
    visible = float(values["homeserver_replication_visible_position"])
    for writer in cluster.writers:
        assert 0 < float(values[f'homeserver_replication_writer_position{{writer="{writer}"}}']) <= visible


def test_a_single_process_deployment_grows_into_writers(tmp_path, unique):
    """docs/scaling.md's growth path: rooms and messages written by one process (role
    main) on the same database are served by the cluster that replaces it, and new events
    sort after the old ones."""
    cluster = Cluster(tmp_path / "c")
    try:
        cluster.shared.mkdir(parents=True)
        cluster.start_postgres()
        single = cluster.single_process()
        single.start()
        alice = new_user(single.base_url, unique("a"))
        status, room = alice.request("POST", "/_matrix/client/v3/createRoom", {"preset": "private_chat"})
        assert status == 200, room
        for i in range(5):
            assert _send(alice, room["room_id"], f"old{i}", f"before {i}")[0] == 200
        single.stop()
        cluster.start()
        alice.base_url = cluster.url(cluster.clients[0])
        for i in range(3):
            status, body = _send(alice, room["room_id"], f"new{i}", f"after {i}")
            assert status == 200, body
        assert _messages(alice, room["room_id"]) == [f"after {i}" for i in (2, 1, 0)] + [
            f"before {i}" for i in (4, 3, 2, 1, 0)]
        others = _rooms_on_each_writer(alice, cluster.writers)  # and new rooms on every writer
        for room_id in others.values():
            assert _send(alice, room_id, unique("t"), "fresh")[0] == 200
    finally:
        cluster.stop()


def test_application_service_gets_every_writers_events_once(tmp_path, unique):
    """Application-service delivery runs in one process (worker.jobs.appservices, here the
    stream owner), fed by the events it replays from both writers: every event reaches
    the service, none twice."""
    import secrets

    import yaml

    from tests.appservice.test_transactions import Receiver

    hs_token = secrets.token_hex(16)
    receiver = Receiver(hs_token)
    registration = {"id": "watch", "url": f"http://127.0.0.1:{receiver.port}", "as_token": secrets.token_hex(16),
                    "hs_token": hs_token, "sender_localpart": "_watch_bot",
                    "namespaces": {"users": [{"exclusive": True, "regex": "@_watch_.*"}], "aliases": [],
                                   "rooms": [{"exclusive": False, "regex": ".*"}]}}
    reg_path = tmp_path / "watch.yaml"
    reg_path.write_text(yaml.safe_dump(registration))
    cluster = Cluster(tmp_path / "c", extra_config=f"app_service_config_files: [{reg_path}]\n")
    try:
        cluster.start()
        alice = new_user(cluster.url(cluster.clients[0]), unique("a"))
        rooms = _rooms_on_each_writer(alice, cluster.writers)
        sent = []
        for room_id in rooms.values():
            for i in range(5):
                status, body = _send(alice, room_id, unique("t"), f"watched {i}")
                assert status == 200, body
                sent.append(body["event_id"])
        deadline = time.monotonic() + 20
        while not set(sent) <= set(receiver.event_ids()) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert set(sent) <= set(receiver.event_ids())
        with receiver.lock:
            delivered = [e["event_id"] for _, body in receiver.attempts for e in body.get("events", [])]
        assert len(delivered) == len(set(delivered)), "an event was delivered twice"
    finally:
        cluster.stop()
        receiver.close()


def test_admin_room_deletion_reaches_every_process(server, unique):
    """The admin API's room deletion runs on the room's writer, and the other processes
    drop what they held of the room: nobody can join it, send to it or read it afterwards."""
    admin = _admin(server)
    alice = new_user(server.base_url, unique("a"))
    bob = new_user(server.base_url, unique("b"))
    rooms = _rooms_on_each_writer(alice, server.cluster.writers, preset="public_chat")
    for room_id in rooms.values():
        assert _send(alice, room_id, unique("t"), "soon gone")[0] == 200
        assert _messages(alice, room_id) == ["soon gone"]  # the client process holds the room now
    for room_id in rooms.values():
        status, body = admin.request("DELETE", f"/_synapse/admin/v1/rooms/{urllib.parse.quote(room_id)}",
                                     {"purge": True})
        assert status == 200, body
        status, body = bob.request("POST", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/join", {})
        assert status in (403, 404), (status, body)
        status, body = _send(alice, room_id, unique("t"), "too late")
        assert status in (403, 404), (status, body)
        status, body = _eventually(  # the client process drops the room when its notice arrives
            lambda: alice.request("GET", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/messages?dir=b"),
            lambda answer: answer[0] in (403, 404))
        assert status in (403, 404), (status, body)


@contextmanager
def _push_cluster(tmp_path, worker_extra: str = "") -> Iterator[tuple[Cluster, Any]]:
    """A cluster of its own delivering to a recording push gateway; `worker_extra` goes
    into the `worker` section."""
    from tests.push_gateway import PushGateway
    from tests.server_harness import free_port

    gateway = PushGateway(free_port())
    gateway.start()
    cluster = Cluster(tmp_path / "c", extra_config=worker_extra + "push:\n  gateway_ip_range_whitelist: ['127.0.0.0/8']\n"
                                                  "  retry_initial_ms: 200\n  synced_within_ms: 1000\n")
    try:
        cluster.start()
        yield cluster, gateway
    finally:
        cluster.stop()
        gateway.stop()


def _set_pusher(user: Http, gateway) -> None:
    status, body = user.request("POST", "/_matrix/client/v3/pushers/set", {
        "kind": "http", "app_id": "com.example.app", "pushkey": "key-1", "app_display_name": "App",
        "device_display_name": "Phone", "lang": "en", "data": {"url": gateway.url}})
    assert status == 200, body


def test_push_gateway_gets_each_writers_notifications_once(tmp_path, unique):
    """Push delivery runs in one process (worker.jobs.pushers, here the stream owner),
    from the push results the writers stored with their events."""
    with _push_cluster(tmp_path) as (cluster, gateway):
        url = cluster.url(cluster.clients[0])
        alice, bob = new_user(url, unique("a")), new_user(url, unique("b"))
        rooms = _rooms_on_each_writer(alice, cluster.writers, invite=bob.user_id)
        for room_id in rooms.values():
            assert bob.request("POST", f"/_matrix/client/v3/join/{urllib.parse.quote(room_id)}", {})[0] == 200
        _set_pusher(bob, gateway)
        mentions = []
        for room_id in rooms.values():
            status, body = alice.request(
                "PUT", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/send/m.room.message/{unique('t')}",
                {"msgtype": "m.text", "body": "ping", "m.mentions": {"user_ids": [bob.user_id]}})
            assert status == 200, body
            mentions.append(body["event_id"])
        gateway.wait_for(lambda notes: all(any(n.get("event_id") == m for n in notes) for m in mentions))
        time.sleep(0.5)  # a second delivery would have arrived by now
        for event_id in mentions:
            assert len(gateway.for_event(event_id)) == 1
        assert not gateway.bad_requests


def test_pushers_job_away_from_the_stream_owner(tmp_path, unique):
    """With the pushers job on a client process, what the stream owner keeps still
    decides: no push while the user is syncing there (asked over the internal listener),
    and a read receipt stored there lowers the counts the job holds (a badge-only push
    with the new count)."""
    with _push_cluster(tmp_path, "  jobs:\n    pushers: client1\n") as (cluster, gateway):
        alice, bob, room_id = pair_in_room(cluster.url(cluster.clients[0]), unique("a"), unique("b"))
        _set_pusher(bob, gateway)

        def mention(text: str) -> str:
            status, body = alice.request(
                "PUT", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/send/m.room.message/{unique('t')}",
                {"msgtype": "m.text", "body": text, "m.mentions": {"user_ids": [bob.user_id]}})
            assert status == 200, body
            return body["event_id"]

        bob_on_sync = Http(cluster.url(cluster.sync), bob.token)
        status, first = bob_on_sync.request("GET", "/_matrix/client/v3/sync?timeout=0")
        assert status == 200, first
        answered: dict = {}
        poll = threading.Thread(target=lambda: answered.update(resp=bob_on_sync.request(
            "GET", f"/_matrix/client/v3/sync?timeout=10000&since={urllib.parse.quote(first['next_batch'])}")))
        poll.start()
        time.sleep(0.5)  # the long-poll is in flight on the sync process
        seen = mention("you are looking")
        poll.join(15)
        assert answered["resp"][0] == 200
        time.sleep(2.0)  # past synced_within_ms: the next ones are pushed
        pushed = [mention("you looked away"), mention("still there?")]
        notes = gateway.wait_for(lambda ns: any(n.get("event_id") == pushed[-1] for n in ns))
        assert gateway.for_event(seen) == [], "pushed while the user was syncing on the sync process"
        assert [n["counts"] for n in notes if n.get("event_id") == pushed[-1]] == [{"unread": 1}]
        before = len(notes)
        status, body = bob.request(
            "POST", f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/receipt/m.read/"
                    f"{urllib.parse.quote(pushed[-1])}", {})
        assert status == 200, body
        badge = gateway.wait_for(lambda ns: len(ns) > before)[before]
        assert badge["counts"] == {"unread": 0} and "event_id" not in badge
        # The stream owner gone: nobody can say the user is reading along, so phones ring.
        cluster.procs[cluster.sync].stop()
        unasked = mention("anyone?")
        gateway.wait_for(lambda ns: any(n.get("event_id") == unasked for n in ns))
        assert not gateway.bad_requests


def test_a_client_cannot_claim_its_request_was_forwarded(server, unique):
    """The header a process adds when it forwards counts only on the internal listener
    (where the secret was checked): sent by a client to a public listener, it must not make
    a process answer what another owns (here a per-user stream write, which only the
    stream owner may make)."""
    cluster = server.cluster
    alice = new_user(server.base_url, unique("a"))
    on_client = Http(cluster.url(cluster.clients[0]), alice.token)
    on_sync = Http(cluster.url(cluster.sync), alice.token)
    status, first = on_sync.request("GET", "/_matrix/client/v3/sync?timeout=0")
    assert status == 200, first
    kind = f"com.example.claimed.{unique('k')}"
    status, body = on_client.request(
        "PUT", f"/_matrix/client/v3/user/{urllib.parse.quote(alice.user_id)}/account_data/{kind}",
        {"written": "through the client process"}, headers={"X-Homeserver-Forwarded": "sync1"})
    assert status == 200, body
    status, later = on_sync.request("GET", f"/_matrix/client/v3/sync?timeout=3000&since={first['next_batch']}")
    assert status == 200, later
    events = later.get("account_data", {}).get("events", [])
    assert [e["content"] for e in events if e["type"] == kind] == [{"written": "through the client process"}]


def test_a_forwarded_request_is_logged_by_both_processes_under_one_id(server, unique):
    """The client process that forwards a write logs it (route "forwarded to <writer>")
    under the request id the writer logs its own line with."""
    alice = new_user(server.cluster.url(server.cluster.clients[0]), unique("a"))
    rooms = _rooms_on_each_writer(alice, server.cluster.writers)
    room_id = next(iter(rooms.values()))
    req = urllib.request.Request(
        f"{alice.base_url}/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/send/m.room.message/{unique('t')}",
        data=b'{"msgtype": "m.text", "body": "traced"}', method="PUT",
        headers={"Authorization": f"Bearer {alice.token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as resp:
        rid = resp.headers["X-Request-Id"]
        assert resp.status == 200
    owner = writer_for_room(room_id, server.cluster.writers)
    lines = _eventually(lambda: [line for line in server.cluster.log_path.read_text().splitlines()
                                 if f"[{rid}]" in line and "homeserver.access" in line],
                        lambda found: len(found) >= 2)
    assert len(lines) == 2, lines
    assert any(f"route=forwarded to {owner}" in line for line in lines), lines
    assert any("route=/_matrix/client/" in line and "/send/" in line for line in lines), lines
