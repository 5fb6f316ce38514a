"""What one process of the cluster caches and another changes (docs/scaling.md, "Cache
invalidations"): each change made through one process is seen by the others once its
notice arrives, milliseconds later."""
from __future__ import annotations

import time
import urllib.parse

from homeserver.sharding import writer_for_room
from tests.scaleout.test_cluster import _admin, _eventually, _rooms_on_each_writer, _send
from tests.server_harness import Http, new_user, pair_in_room


def _q(value: str) -> str:
    return urllib.parse.quote(value)


def _visibility_on(user: Http, room_id: str) -> str:
    status, body = user.request("GET", f"/_matrix/client/v3/rooms/{_q(room_id)}/initialSync")
    assert status == 200, body
    return body["visibility"]


def _published(user: Http, name: str) -> list[str]:
    status, body = user.request("POST", "/_matrix/client/v3/publicRooms",
                                {"filter": {"generic_search_term": name}, "limit": 50})
    assert status == 200, body
    return [r["room_id"] for r in body["chunk"]]


def test_publishing_a_room_reaches_every_process(server, unique):
    """The published flag that room heads hold: set through the client process, the sync
    process's /initialSync shows it, and the room's writer moves the listing on upgrade."""
    cluster = server.cluster
    alice = new_user(server.base_url, unique("a"))
    on_sync = Http(cluster.url(cluster.sync), alice.token)
    names = {}
    for writer, room_id in _rooms_on_each_writer(alice, cluster.writers).items():
        names[room_id] = unique(f"listed-{writer}")
        status, body = alice.request("PUT", f"/_matrix/client/v3/rooms/{_q(room_id)}/state/m.room.name",
                                     {"name": names[room_id]})
        assert status == 200, body
        assert _visibility_on(on_sync, room_id) == "private"  # the sync process holds the head now
    for room_id in names:
        status, body = alice.request("PUT", f"/_matrix/client/v3/directory/list/room/{_q(room_id)}",
                                     {"visibility": "public"})
        assert status == 200, body
        assert _published(alice, names[room_id]) == [room_id]
        assert _eventually(lambda: _visibility_on(on_sync, room_id), lambda v: v == "public") == "public"
    # An upgrade runs on the old room's writer, which moves the listing to the new room.
    for room_id, name in names.items():
        status, body = alice.request("POST", f"/_matrix/client/v3/rooms/{_q(room_id)}/upgrade", {"new_version": "11"})
        assert status == 200, body
        new_room = body["replacement_room"]
        assert _published(alice, name) == [new_room], f"{writer_for_room(room_id, cluster.writers)} kept the listing"
        assert _eventually(lambda: _visibility_on(on_sync, room_id), lambda v: v == "private") == "private"
    # And back: unpublished through the client process, private on the sync process.
    room_id = next(iter(names))
    status, body = alice.request("PUT", f"/_matrix/client/v3/directory/list/room/{_q(room_id)}",
                                 {"visibility": "public"})
    assert status == 200, body
    assert _eventually(lambda: _visibility_on(on_sync, room_id), lambda v: v == "public") == "public"
    status, body = alice.request("PUT", f"/_matrix/client/v3/directory/list/room/{_q(room_id)}",
                                 {"visibility": "private"})
    assert status == 200, body
    assert _eventually(lambda: _visibility_on(on_sync, room_id), lambda v: v == "private") == "private"


def _override_path(user_id: str) -> str:
    return f"/_homeserver/admin/v1/users/{_q(user_id)}/ratelimit"


def test_rate_limit_override_applies_on_every_process(server, unique):
    """An override set (and removed) through the client process binds at once wherever
    the user's messages are counted."""
    cluster = server.cluster
    admin = _admin(server)
    bob = new_user(server.base_url, unique("b"))
    rooms = _rooms_on_each_writer(bob, cluster.writers)
    for room_id in rooms.values():  # every process has loaded the overrides now
        status, body = _send(bob, room_id, unique("t"), "before")
        assert status == 200, body
    every = [Http(cluster.url(name), admin.token) for name in cluster.names()]
    for process in every:
        assert process.request("GET", _override_path(bob.user_id)) == (200, {})
    tight = {"messages_per_second": 0.01, "burst_count": 2}
    status, body = admin.request("PUT", _override_path(bob.user_id), tight)
    assert status == 200, body
    for process in every:
        assert _eventually(lambda: process.request("GET", _override_path(bob.user_id)),
                           lambda answer: answer == (200, tight)) == (200, tight), process.base_url
    for entry in (cluster.clients[0], cluster.sync):  # a message enters at either
        sender = Http(cluster.url(entry), bob.token)
        for room_id in rooms.values():
            answers = [_send(sender, room_id, unique("t"), "limited") for _ in range(4)]
            refused = [body for status, body in answers if status == 429]
            assert refused and refused[0]["errcode"] == "M_LIMIT_EXCEEDED", (entry, answers)
    status, body = admin.request("DELETE", _override_path(bob.user_id))
    assert status == 200, body
    for process in every:
        assert _eventually(lambda: process.request("GET", _override_path(bob.user_id)),
                           lambda answer: answer == (200, {})) == (200, {}), process.base_url
    for room_id in rooms.values():
        status, body = _send(bob, room_id, unique("t"), "free again")
        assert status == 200, body


def test_admin_flag_change_reaches_every_process(server, unique):
    """Cached token owners carry the admin flag: a promotion or demotion through the client
    process holds there at once and on the other processes when the notice arrives."""
    cluster = server.cluster
    admin = _admin(server)
    bob = new_user(server.base_url, unique("b"))
    on_sync = Http(cluster.url(cluster.sync), bob.token)
    whom = f"/_synapse/admin/v2/users/{_q(bob.user_id)}"
    for process in (bob, on_sync):  # bob's token cached on both, not an admin
        assert process.request("GET", whom)[0] == 403
    status, body = admin.request("PUT", f"/_synapse/admin/v1/users/{_q(bob.user_id)}/admin", {"admin": True})
    assert status == 200, body
    assert bob.request("GET", whom)[0] == 200
    assert _eventually(lambda: on_sync.request("GET", whom)[0], lambda s: s == 200) == 200
    status, body = admin.request("PUT", f"/_synapse/admin/v1/users/{_q(bob.user_id)}/admin", {"admin": False})
    assert status == 200, body
    assert bob.request("GET", whom)[0] == 403
    assert _eventually(lambda: on_sync.request("GET", whom)[0], lambda s: s == 403) == 403


def test_pushers_of_a_device_an_admin_deletes_go_with_it(server, unique):
    """The pusher job's process holds every pusher; a device deleted through the admin API
    (the client process) takes its pushers along there too."""
    admin = _admin(server)
    bob = new_user(server.base_url, unique("b"))
    status, body = bob.request("POST", "/_matrix/client/v3/pushers/set", {
        "kind": "http", "app_id": "com.example.app", "pushkey": unique("key"), "app_display_name": "App",
        "device_display_name": "Phone", "lang": "en", "data": {"url": "https://push.example/_matrix/push/v1/notify"}})
    assert status == 200, body
    assert len(bob.request("GET", "/_matrix/client/v3/pushers")[1]["pushers"]) == 1
    status, body = admin.request(
        "DELETE", f"/_synapse/admin/v2/users/{_q(bob.user_id)}/devices/{_q(bob.device_id)}")
    assert status == 200, body
    status, login = Http(server.base_url).request(
        "POST", "/_matrix/client/v3/login", {"type": "m.login.password", "user": bob.user_id, "password": "secret-pw"})
    assert status == 200, login
    again = Http(server.base_url, login["access_token"])
    status, body = _eventually(lambda: again.request("GET", "/_matrix/client/v3/pushers"),
                               lambda answer: answer[1].get("pushers") == [])
    assert (status, body) == (200, {"pushers": []})


def _sync_rooms(user: Http, section: str) -> set[str]:
    leave_filter = _q('{"room": {"include_leave": true}}')
    status, body = user.request("GET", f"/_matrix/client/v3/sync?timeout=0&filter={leave_filter}")
    assert status == 200, body
    return set(body.get("rooms", {}).get(section, {}))


def test_forgotten_room_leaves_the_sync_process(server, unique):
    """/forget is answered by the room's writer; the sync process leaves the room out of
    /sync from then on."""
    cluster = server.cluster
    alice = new_user(server.base_url, unique("a"))
    on_sync = Http(cluster.url(cluster.sync), alice.token)
    rooms = _rooms_on_each_writer(alice, cluster.writers)
    for room_id in rooms.values():
        status, body = alice.request("POST", f"/_matrix/client/v3/rooms/{_q(room_id)}/leave", {})
        assert status == 200, body
    left = set(rooms.values())
    assert _eventually(lambda: _sync_rooms(on_sync, "leave"), lambda found: left <= found) >= left
    for room_id in rooms.values():
        status, body = alice.request("POST", f"/_matrix/client/v3/rooms/{_q(room_id)}/forget", {})
        assert status == 200, body
    assert not _eventually(lambda: _sync_rooms(on_sync, "leave") & left, lambda found: not found)


def test_ignored_users_reach_the_client_process(server, unique):
    """The ignore list is account data, written by the sync process; /messages on the
    client process leaves the ignored sender out as soon as the notice arrives."""
    alice = new_user(server.base_url, unique("a"))
    carol = new_user(server.base_url, unique("c"))
    status, room = alice.request("POST", "/_matrix/client/v3/createRoom", {"preset": "public_chat"})
    assert status == 200, room
    room_id = room["room_id"]
    assert carol.request("POST", f"/_matrix/client/v3/join/{_q(room_id)}", {})[0] == 200
    assert _send(carol, room_id, unique("t"), "from carol")[0] == 200

    def bodies() -> list[str]:
        status, page = alice.request("GET", f"/_matrix/client/v3/rooms/{_q(room_id)}/messages?dir=b&limit=50")
        assert status == 200, page
        return [e["content"].get("body") for e in page["chunk"] if e["type"] == "m.room.message"]
    assert bodies() == ["from carol"]  # the client process has alice's (empty) list now
    status, body = alice.request("PUT", f"/_matrix/client/v3/user/{_q(alice.user_id)}/account_data/m.ignored_user_list",
                                 {"ignored_users": {carol.user_id: {}}})
    assert status == 200, body
    assert _eventually(bodies, lambda found: found == []) == []
    status, body = alice.request("PUT", f"/_matrix/client/v3/user/{_q(alice.user_id)}/account_data/m.ignored_user_list",
                                 {"ignored_users": {}})
    assert status == 200, body
    assert _eventually(bodies, lambda found: found == ["from carol"]) == ["from carol"]


def test_notifications_are_read_once_a_receipt_says_so(server, unique):
    """/notifications marks what the user has read by the receipts the sync process keeps."""
    alice, bob, room_id = pair_in_room(server.base_url, unique("a"), unique("b"))
    status, sent = alice.request("PUT", f"/_matrix/client/v3/rooms/{_q(room_id)}/send/m.room.message/{unique('t')}",
                                 {"msgtype": "m.text", "body": "hey", "m.mentions": {"user_ids": [bob.user_id]}})
    assert status == 200, sent

    def read_flags() -> list[bool]:
        status, body = bob.request("GET", "/_matrix/client/v3/notifications")
        assert status == 200, body
        return [n["read"] for n in body["notifications"] if n["event"]["event_id"] == sent["event_id"]]
    assert _eventually(read_flags, lambda flags: flags == [False]) == [False]
    status, body = bob.request("POST", f"/_matrix/client/v3/rooms/{_q(room_id)}/receipt/m.read/{_q(sent['event_id'])}", {})
    assert status == 200, body
    assert _eventually(read_flags, lambda flags: flags == [True]) == [True]


def test_upload_to_a_pending_media_id_wakes_a_download_elsewhere(server, unique):
    """A download waiting on one process for media reserved but not uploaded yet ends when
    the upload lands on another."""
    import threading
    import time
    import urllib.request

    cluster = server.cluster
    alice = new_user(server.base_url, unique("a"))
    status, created = alice.request("POST", "/_matrix/media/v1/create", {})
    assert status == 200, created
    server_name, media_id = created["content_uri"][len("mxc://"):].split("/", 1)
    got: dict = {}

    def download() -> None:
        request = urllib.request.Request(
            f"{cluster.url(cluster.sync)}/_matrix/client/v1/media/download/{server_name}/{media_id}?timeout_ms=20000",
            headers={"Authorization": f"Bearer {alice.token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            got["body"], got["at"] = response.read(), time.monotonic()
    waiting = threading.Thread(target=download)
    waiting.start()
    time.sleep(1.0)  # the download waits on the sync process
    status, body = alice.request("PUT", f"/_matrix/media/v3/upload/{server_name}/{media_id}", raw=b"the content",
                                 headers={"Content-Type": "text/plain"})
    uploaded_at = time.monotonic()
    assert status == 200, body
    waiting.join(30)
    assert got.get("body") == b"the content"
    assert got["at"] - uploaded_at < 3, f"the download waited {got['at'] - uploaded_at:.1f} s more"


def test_publishing_while_another_process_loads_the_head(server, unique):
    """The flag changes while the sync process is loading the room's head (as it does for
    a room new to it, when the room's first events are replayed there), after that load
    read the old flag: the notice arrives while no head is held there yet, and the load
    must not be kept (else the sync process shows the old flag until the head is next
    reloaded). The load is held half way by a lock on the last table it reads."""
    import threading

    import psycopg2

    from homeserver.replication import application_name

    cluster = server.cluster
    alice = new_user(server.base_url, unique("a"))
    locker = psycopg2.connect(cluster.dsn)
    try:
        with locker.cursor() as cur:
            cur.execute("LOCK TABLE remote_rooms IN ACCESS EXCLUSIVE MODE")  # read by head loads only
            status, body = alice.request("POST", "/_matrix/client/v3/createRoom", {"name": unique("race")})
            assert status == 200, body
            room_id = body["room_id"]
            watcher = psycopg2.connect(cluster.dsn)
            watcher.autocommit = True
            try:
                def loading_on_sync() -> bool:
                    with watcher.cursor() as w:
                        w.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
                                  " AND wait_event_type = 'Lock' AND query LIKE '%%remote_rooms%%'",
                                  (application_name(cluster.sync),))
                        return w.fetchone()[0] > 0
                assert _eventually(loading_on_sync, bool, within=10), "the sync process did not load the head"
            finally:
                watcher.close()
            # Published through the room's writer, which holds the head (no load to wait for).
            on_writer = Http(cluster.url(writer_for_room(room_id, cluster.writers)), alice.token)
            status, body = on_writer.request("PUT", f"/_matrix/client/v3/directory/list/room/{_q(room_id)}",
                                             {"visibility": "public"})
            assert status == 200, body
            time.sleep(1.0)  # the notice reaches the sync process while its load waits
    finally:
        locker.rollback()
        locker.close()
    on_sync = Http(cluster.url(cluster.sync), alice.token)
    assert _eventually(lambda: _visibility_on(on_sync, room_id), lambda v: v == "public") == "public"
