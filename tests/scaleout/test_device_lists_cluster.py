"""Device-list changes made away from the stream owner (docs/scaling.md): the admin API is
answered by client processes, yet the users sharing a room with the changed user read
`device_lists.changed` (and `/keys/changes`) from the stream owner's /sync."""
from __future__ import annotations

import urllib.parse

from tests.scaleout.test_cluster import _admin
from tests.server_harness import Http, pair_in_room

INTERNAL_PATH = "/_homeserver/internal/v1/device_list_changed"


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
        # Recorded before the admin call answered: no waiting.
        synced = _sync(bob_on_sync, since)
        assert alice.user_id in synced.get("device_lists", {}).get("changed", []), (what, synced)
        assert alice.user_id in _key_changes(bob_on_sync, since, synced["next_batch"]), what
        since = synced["next_batch"]
    status, answer = on_client.request("GET", f"/_synapse/admin/v2/users/{_q(alice.user_id)}/devices")
    assert status == 200 and answer["devices"] == [], answer


def test_the_stream_owner_records_a_device_list_change_it_is_told_of(server, unique):
    """The internal call behind the above: only with the secret, only on the stream owner,
    and malformed bodies are refused."""
    cluster = server.cluster
    alice, bob, _ = pair_in_room(server.base_url, unique("a"), unique("b"))
    bob_on_sync = Http(cluster.url(cluster.sync), bob.token)
    since = _sync(bob_on_sync)["next_batch"]
    owner = Http(f"http://127.0.0.1:{cluster.internal_ports[cluster.sync]}", None)
    secret = {"X-Homeserver-Internal": cluster.secret}
    status, body = owner.request("POST", INTERNAL_PATH, {"user_id": alice.user_id})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    for bad in ({}, {"user_id": 5}, {"user_id": "not-a-user-id"}, [alice.user_id]):
        status, body = owner.request("POST", INTERNAL_PATH, bad, headers=secret)
        assert status == 400 and body["errcode"] == "M_BAD_JSON", (bad, body)
    elsewhere = Http(f"http://127.0.0.1:{cluster.internal_ports[cluster.clients[0]]}", None)
    status, body = elsewhere.request("POST", INTERNAL_PATH, {"user_id": alice.user_id}, headers=secret)
    assert status == 404 and body["errcode"] == "M_UNRECOGNIZED", body
    assert alice.user_id not in _sync(bob_on_sync, since).get("device_lists", {}).get("changed", [])
    status, body = owner.request("POST", INTERNAL_PATH, {"user_id": alice.user_id}, headers=secret)
    assert (status, body) == (200, {})
    assert alice.user_id in _sync(bob_on_sync, since).get("device_lists", {}).get("changed", [])
