"""What one process of the cluster caches and another changes (docs/scaling.md, "Cache
invalidations"): each change made through one process is seen by the others once its
notice arrives, milliseconds later."""
from __future__ import annotations

import urllib.parse

from homeserver.sharding import writer_for_room
from tests.scaleout.test_cluster import _admin, _eventually, _rooms_on_each_writer, _send
from tests.server_harness import Http, new_user


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
