"""Rate limits with several processes (docs/scaling.md, "Rate limits"): a user's own
buckets are counted by the process the request enters, before it is forwarded, and the
proxy sends every token of a user to the same client process, so a user has one budget
across writers and devices."""
from __future__ import annotations

import urllib.parse

from tests.cluster import Cluster
from tests.scaleout.conftest import proxy_in_front
from tests.scaleout.test_cluster import _admin, _rooms_on_each_writer, _send
from tests.server_harness import Http, new_user


def _limit(server, user: Http, burst: int) -> None:
    status, body = _admin(server).request(
        "PUT", f"/_homeserver/admin/v1/users/{urllib.parse.quote(user.user_id)}/ratelimit",
        {"messages_per_second": 0.001, "burst_count": burst})
    assert status == 200, body


def test_messages_to_rooms_of_different_writers_share_one_budget(server, unique):
    bob = new_user(server.base_url, unique("b"))
    rooms = _rooms_on_each_writer(bob, server.cluster.writers)
    _limit(server, bob, 3)
    order = [rooms[w] for w in server.cluster.writers] * 2
    answers = [_send(bob, room_id, unique("t"), "counted once") for room_id in order]
    assert [status for status, _ in answers] == [200, 200, 200, 429], answers
    assert answers[-1][1]["errcode"] == "M_LIMIT_EXCEEDED"


def test_every_token_of_a_user_reaches_one_client_process(tmp_path, unique):
    """Twelve devices of one user behind the proxy with two client processes: one budget.
    (Hashed by token instead, twelve tokens all land on one of two processes once in 2,000.)"""
    cluster = Cluster(tmp_path / "c", clients=["client1", "client2"])
    try:
        cluster.start()
        with proxy_in_front(cluster, tmp_path / "nginx") as proxy:
            bob = new_user(proxy.base_url, unique("b"))
            devices = [bob]
            for _ in range(11):
                status, login = Http(proxy.base_url).request("POST", "/_matrix/client/v3/login", {
                    "type": "m.login.password", "identifier": {"type": "m.id.user", "user": bob.user_id},
                    "password": "secret-pw"})
                assert status == 200, login
                devices.append(Http(proxy.base_url, login["access_token"]))
            rooms = list(_rooms_on_each_writer(bob, cluster.writers).values())
            _limit(proxy, bob, len(devices))
            for i, device in enumerate(devices):
                status, body = _send(device, rooms[i % len(rooms)], unique("t"), f"from device {i}")
                assert status == 200, body
            for i, device in enumerate(devices[:2]):
                status, body = _send(device, rooms[i % len(rooms)], unique("t"), "one too many")
                assert status == 429 and body["errcode"] == "M_LIMIT_EXCEEDED", (status, body)
    finally:
        cluster.stop()
