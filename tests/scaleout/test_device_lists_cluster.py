"""Device-list changes made away from the stream owner (docs/scaling.md): the admin API is
answered by client processes, yet the users sharing a room with the changed user read
`device_lists.changed` (and `/keys/changes`) from the stream owner's /sync, also when the
owner was away when the change was made."""
from __future__ import annotations

import time
import urllib.parse

from tests.scaleout.test_cluster import _admin
from tests.server_harness import Http, pair_in_room


def _q(value: str) -> str:
    return urllib.parse.quote(value)


def _sync(user: Http, since: str | None = None) -> dict:
    status, body = user.request("GET", "/_matrix/client/v3/sync?timeout=0"
                                + (f"&since={_q(since)}" if since else ""))
    assert status == 200, body
    return body


def _key_changes(user: Http, since: str, upto: str) -> list[str]:
    status, body = user.request("GET", f"/_matrix/client/v3/keys/changes?from={_q(since)}&to={_q(upto)}")
    assert status == 200, body
    return body["changed"]


def _changed_after(user: Http, since: str, user_id: str, within: float = 5.0) -> dict:
    """bob's /sync from `since` once it lists `user_id` as changed (the owner records a
    change queued elsewhere when it hears of it, milliseconds later)."""
    deadline = time.monotonic() + within
    while True:
        synced = _sync(user, since)
        if user_id in synced.get("device_lists", {}).get("changed", []) or time.monotonic() > deadline:
            return synced
        time.sleep(0.1)


def _login(base_url: str, user_id: str, device_name: str) -> str:
    status, login = Http(base_url).request("POST", "/_matrix/client/v3/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": user_id},
        "password": "secret-pw", "initial_device_display_name": device_name})
    assert status == 200, login
    return login["device_id"]


def test_admin_device_changes_on_a_client_process_reach_sync_on_the_stream_owner(server, unique):
    """An admin renames and deletes alice's phone, and resets her password (logging her
    devices out), through the client process: bob, sharing a room and syncing on the sync
    process, is told each time to re-query alice's keys, so E2EE clients stop encrypting
    to a device that is gone."""
    cluster = server.cluster
    admin = _admin(server)
    on_client = Http(cluster.url(cluster.clients[0]), admin.token)  # where nginx sends /_synapse/admin
    alice, bob, _ = pair_in_room(server.base_url, unique("a"), unique("b"))
    phone = _login(server.base_url, alice.user_id, "Phone")
    bob_on_sync = Http(cluster.url(cluster.sync), bob.token)
    since = _sync(bob_on_sync)["next_batch"]
    devices = f"/_synapse/admin/v2/users/{_q(alice.user_id)}/devices/{_q(phone)}"
    for what, method, path, body in (
            ("rename", "PUT", devices, {"display_name": "Lost phone"}),
            ("delete", "DELETE", devices, None),
            ("reset password", "POST", f"/_synapse/admin/v1/reset_password/{_q(alice.user_id)}",
             {"new_password": "another-pw", "logout_devices": True})):
        status, answer = on_client.request(method, path, body)
        assert status == 200, (what, answer)
        synced = _changed_after(bob_on_sync, since, alice.user_id)
        assert alice.user_id in synced.get("device_lists", {}).get("changed", []), (what, synced)
        assert alice.user_id in _key_changes(bob_on_sync, since, synced["next_batch"]), what
        since = synced["next_batch"]
    status, answer = on_client.request("GET", f"/_synapse/admin/v2/users/{_q(alice.user_id)}/devices")
    assert status == 200 and answer["devices"] == [], answer


def test_a_change_made_while_the_stream_owner_is_away_reaches_it_when_it_is_back(server, unique):
    """The change is stored where it is made (the outbox) and the owner records it when it
    starts again: the admin call succeeds, and nothing is lost."""
    cluster = server.cluster
    admin = _admin(server)
    on_client = Http(cluster.url(cluster.clients[0]), admin.token)
    alice, bob, _ = pair_in_room(server.base_url, unique("a"), unique("b"))
    phone = _login(server.base_url, alice.user_id, "Phone")
    bob_on_sync = Http(cluster.url(cluster.sync), bob.token)
    since = _sync(bob_on_sync)["next_batch"]
    cluster.procs[cluster.sync].stop()
    try:
        status, answer = on_client.request("DELETE", f"/_synapse/admin/v2/users/{_q(alice.user_id)}"
                                                     f"/devices/{_q(phone)}")
        assert status == 200, answer
    finally:
        cluster.restart(cluster.sync)
    synced = _changed_after(bob_on_sync, since, alice.user_id)
    assert alice.user_id in synced.get("device_lists", {}).get("changed", []), synced
