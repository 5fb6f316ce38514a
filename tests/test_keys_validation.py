"""Malformed end-to-end encryption uploads are refused with the spec's errors: device keys
missing `algorithms`, `keys` or `signatures`, or for another user or device, and key
backups under an algorithm the spec does not define."""
from __future__ import annotations

import pytest

from tests.server_harness import Http

V3 = "/_matrix/client/v3"
BACKUP_ALG = "m.megolm_backup.v1.curve25519-aes-sha2"


@pytest.fixture
def client(server, unique) -> Http:
    http = Http(server.base_url)
    reg = http.register(unique("k"))
    http.token = reg["access_token"]
    http.user_id, http.device_id = reg["user_id"], reg["device_id"]
    return http


def _device_keys(c: Http, **changes) -> dict:
    keys = {"user_id": c.user_id, "device_id": c.device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {f"curve25519:{c.device_id}": "curvekey", f"ed25519:{c.device_id}": "edkey"},
            "signatures": {c.user_id: {f"ed25519:{c.device_id}": "sig"}}}
    keys.update(changes)
    return {k: v for k, v in keys.items() if v is not None}


@pytest.mark.parametrize("changes", [
    {"algorithms": None}, {"keys": None}, {"signatures": None},
    {"algorithms": "m.olm.v1.curve25519-aes-sha2"}, {"algorithms": [1]},
    {"keys": ["curvekey"]}, {"keys": {"curve25519:X": 5}},
    {"signatures": {"@u:test.local": "sig"}}, {"signatures": {"@u:test.local": {"ed25519:X": 1}}},
    {"user_id": None}, {"device_id": 7},
])
def test_malformed_device_keys_are_bad_json(client, changes):
    status, body = client.request("POST", f"{V3}/keys/upload", {"device_keys": _device_keys(client, **changes)})
    assert (status, body["errcode"]) == (400, "M_BAD_JSON"), body
    status, query = client.request("POST", f"{V3}/keys/query", {"device_keys": {client.user_id: []}})
    assert query["device_keys"][client.user_id] == {}  # nothing was stored


@pytest.mark.parametrize("field", ["user_id", "device_id"])
def test_device_keys_of_another_user_or_device_are_invalid(client, field):
    other = "@someone:test.local" if field == "user_id" else "OTHERDEVICE"
    status, body = client.request("POST", f"{V3}/keys/upload",
                                  {"device_keys": _device_keys(client, **{field: other})})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM"), body


def test_well_formed_device_keys_are_stored(client):
    status, body = client.request("POST", f"{V3}/keys/upload", {"device_keys": _device_keys(client)})
    assert status == 200, body
    status, query = client.request("POST", f"{V3}/keys/query", {"device_keys": {client.user_id: []}})
    assert query["device_keys"][client.user_id][client.device_id]["keys"] == _device_keys(client)["keys"]


def test_malformed_one_time_key_objects_are_bad_json(client):
    for key in ({"signatures": {}}, {"key": 5}, {"key": "k", "signatures": "x"}):
        status, body = client.request("POST", f"{V3}/keys/upload",
                                      {"one_time_keys": {"signed_curve25519:AAA": key}})
        assert (status, body["errcode"]) == (400, "M_BAD_JSON"), (key, body)


@pytest.mark.parametrize("algorithm", ["org.example.made-up", "m.megolm_backup.v2", ""])
def test_backup_with_unknown_algorithm_is_refused(client, algorithm):
    status, body = client.request("POST", f"{V3}/room_keys/version",
                                  {"algorithm": algorithm, "auth_data": {"public_key": "abc"}})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM"), body
    assert client.request("GET", f"{V3}/room_keys/version")[0] == 404  # nothing was created


def test_backup_algorithm_cannot_be_changed_to_an_unknown_one(client):
    status, body = client.request("POST", f"{V3}/room_keys/version",
                                  {"algorithm": BACKUP_ALG, "auth_data": {"public_key": "abc"}})
    assert status == 200, body
    version = body["version"]
    status, body = client.request("PUT", f"{V3}/room_keys/version/{version}",
                                  {"algorithm": "org.example.made-up", "auth_data": {"public_key": "abc"}})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM"), body
    assert client.request("GET", f"{V3}/room_keys/version")[1]["algorithm"] == BACKUP_ALG
