"""The federation listener on its own: TLS with a generated certificate, the version
endpoint, this server's keys and notary answers (direct, and through a notary when the
server itself is down), X-Matrix request authentication, and the query endpoints
(profile, directory, devices, keys, public rooms, hierarchy, OpenID), each walled off
for tenants."""
from __future__ import annotations

import time
from urllib.parse import quote

import pytest
from signedjson.key import decode_verify_key_base64
from signedjson.sign import verify_signed_json

from tests.federation.harness import V3, FederatedServer, FedHttp, admin_client, federated_pair, user, x_matrix
from tests.server_harness import Http, serving

F1 = "/_matrix/federation/v1"
OLD_KEY = "ed25519:old1"
OLD_PUBLIC = "l8Hft5qXKn1vfHrg3p4+W8gELQVo8N13JkluMfmn2sQ"


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    with federated_pair(tmp_path_factory, "fed", admin_on_a=True, a_federation_extra=(
            f"  old_signing_keys:\n    '{OLD_KEY}': {{key: '{OLD_PUBLIC}', expired_ts: 1000}}\n"
            "  well_known_server: 'fed.example.org:443'\n")) as pair:
        yield pair


def _verify_self_signed(response: dict, server_name: str) -> None:
    for key_id, entry in response["verify_keys"].items():
        alg, version = key_id.split(":")
        verify_signed_json(response, server_name, decode_verify_key_base64(alg, version, entry["key"]))


def test_version_and_own_keys(servers):
    a, _ = servers
    fa = FedHttp(a)  # verifies the listener's certificate against the generated one
    status, body = fa.request("GET", f"{F1}/version")
    assert status == 200 and body["server"]["name"]
    status, keys = fa.request("GET", "/_matrix/key/v2/server")
    assert status == 200 and keys["server_name"] == a.server_name
    _verify_self_signed(keys, a.server_name)
    assert keys["valid_until_ts"] > time.time() * 1000 + 3600_000
    assert keys["old_verify_keys"] == {OLD_KEY: {"key": OLD_PUBLIC, "expired_ts": 1000}}
    # The deprecated form with a key id answers the same keys.
    assert fa.request("GET", f"/_matrix/key/v2/server/{quote(next(iter(keys['verify_keys'])))}")[1][
        "verify_keys"] == keys["verify_keys"]


def test_well_known_server_delegation(servers):
    a, b = servers
    assert Http(a.base_url).request("GET", "/.well-known/matrix/server") == (200, {"m.server": "fed.example.org:443"})
    status, body = Http(b.base_url).request("GET", "/.well-known/matrix/server")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"


def test_notary_answers_for_another_server(servers):
    a, b = servers
    fa = FedHttp(a)
    status, body = fa.request("GET", f"/_matrix/key/v2/query/{b.server_name}")
    assert status == 200 and len(body["server_keys"]) == 1
    response = body["server_keys"][0]
    assert response["server_name"] == b.server_name
    _verify_self_signed({**response, "signatures": {b.server_name: response["signatures"][b.server_name]}},
                        b.server_name)
    # ... and countersigned by the notary with its own key.
    _, a_keys = fa.request("GET", "/_matrix/key/v2/server")
    (a_key_id, a_key), = a_keys["verify_keys"].items()
    verify_signed_json({**response, "signatures": {a.server_name: response["signatures"][a.server_name]}},
                       a.server_name, decode_verify_key_base64("ed25519", a_key_id.split(":")[1], a_key["key"]))
    # POST form, with a validity criterion no key meets: nothing to give.
    status, body = fa.request("POST", "/_matrix/key/v2/query", {"server_keys": {b.server_name: {
        "ed25519:nope": {"minimum_valid_until_ts": 2**60}}}})
    assert status == 200 and body["server_keys"] == []
    status, body = fa.request("POST", "/_matrix/key/v2/query", {"server_keys": []})
    assert status == 400 and body["errcode"] == "M_BAD_JSON"


def test_keys_through_a_notary_when_the_server_is_down(servers, tmp_path_factory):
    a, _ = servers
    # D's keys become known to the notary A; then D goes away.
    with serving(FederatedServer(tmp_path_factory.mktemp("fed-d"))) as d:
        status, body = FedHttp(a).request("GET", f"/_matrix/key/v2/query/{d.server_name}")
        assert status == 200 and body["server_keys"]
        d_key_ids = set(body["server_keys"][0]["verify_keys"])
    _, a_keys = FedHttp(a).request("GET", "/_matrix/key/v2/server")
    (a_key_id, a_key), = a_keys["verify_keys"].items()
    with serving(FederatedServer(tmp_path_factory.mktemp("fed-c"), federation_extra=(
            f"  trusted_key_servers:\n    - server_name: '{a.server_name}'\n"
            f"      verify_keys: {{'{a_key_id}': '{a_key['key']}'}}\n"))) as c:
        status, body = FedHttp(c).request("GET", f"/_matrix/key/v2/query/{d.server_name}")
        assert status == 200 and body["server_keys"], body
        response = body["server_keys"][0]
        assert set(response["verify_keys"]) == d_key_ids
        # D is down: the keys came through the notary A, and C signs its own answer.
        assert set(response["signatures"]) == {d.server_name, c.server_name}


def test_request_authentication(servers):
    a, b = servers
    alice = user(a, "alice")
    alice.request("PUT", f"{V3}/profile/{alice.user_id}/displayname", {"displayname": "Alice A"})
    fa = FedHttp(a)
    path = f"{F1}/query/profile?user_id={quote(alice.user_id)}"
    assert fa.request("GET", path, sign_as=b) == (200, {"displayname": "Alice A"})
    status, body = fa.request("GET", path)
    assert status == 401 and body["errcode"] == "M_UNAUTHORIZED"
    status, body = fa.request("GET", path, sign_as=b, destination="elsewhere.example")
    assert status == 401
    # Signed for another URI, or with a body that was not signed: the signature fails.
    header = x_matrix(b, "GET", f"{F1}/query/profile?user_id=%40x%3Ay", a.server_name)
    status, _ = fa.request("GET", path, headers={"Authorization": header})
    assert status == 401
    header = x_matrix(b, "GET", path, a.server_name).replace(b.server_name, "127.0.0.1:1", 1)
    status, _ = fa.request("GET", path, headers={"Authorization": header})
    assert status == 401
    status, body = fa.request("GET", path, headers={"Authorization": "Bearer nonsense"})
    assert status == 401


def test_profile_and_directory_queries_hide_tenants(servers):
    a, b = servers
    admin = admin_client(a)
    fa = FedHttp(a)
    plain = user(a, "plainuser")
    walled = user(a, "walled", tenant="acme", admin=admin)
    assert fa.request("GET", f"{F1}/query/profile?user_id={quote(plain.user_id)}", sign_as=b)[0] == 200
    missing = fa.request("GET", f"{F1}/query/profile?user_id={quote('@nobody:' + a.server_name)}", sign_as=b)
    tenant = fa.request("GET", f"{F1}/query/profile?user_id={quote(walled.user_id)}", sign_as=b)
    assert missing[0] == tenant[0] == 404 and missing[1]["errcode"] == tenant[1]["errcode"] == "M_NOT_FOUND"

    _, room = plain.request("POST", f"{V3}/createRoom", {"preset": "public_chat", "room_alias_name": "open",
                                                         "visibility": "public", "name": "Open room"})
    _, tenant_room = walled.request("POST", f"{V3}/createRoom", {"preset": "public_chat",
                                                                 "room_alias_name": "closed", "visibility": "public"})
    status, body = fa.request("GET", f"{F1}/query/directory?room_alias={quote('#open:' + a.server_name)}", sign_as=b)
    assert status == 200 and body == {"room_id": room["room_id"], "servers": [a.server_name]}
    for alias in ("#closed:", "#nothere:"):
        status, body = fa.request("GET", f"{F1}/query/directory?room_alias={quote(alias + a.server_name)}",
                                  sign_as=b)
        assert status == 404 and body["errcode"] == "M_NOT_FOUND"

    status, body = fa.request("GET", f"{F1}/publicRooms", sign_as=b)
    ids = [r["room_id"] for r in body["chunk"]]
    assert status == 200 and room["room_id"] in ids and tenant_room["room_id"] not in ids
    status, body = fa.request("POST", f"{F1}/publicRooms", {"filter": {"generic_search_term": "Open"}}, sign_as=b)
    assert status == 200 and [r["room_id"] for r in body["chunk"]] == [room["room_id"]]
    assert fa.request("GET", f"{F1}/publicRooms")[0] == 401


def test_devices_and_keys(servers):
    a, b = servers
    admin = admin_client(a)
    fa = FedHttp(a)
    owner = user(a, "keyowner")
    walled = user(a, "keywalled", tenant="acme", admin=admin)
    for u in (owner, walled):
        _, who = u.request("GET", f"{V3}/account/whoami")
        device = who["device_id"]
        status, _ = u.request("POST", f"{V3}/keys/upload", {
            "device_keys": {"user_id": u.user_id, "device_id": device,
                            "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
                            "keys": {f"curve25519:{device}": "c25519", f"ed25519:{device}": "ed"},
                            "signatures": {u.user_id: {f"ed25519:{device}": "sig"}}},
            "one_time_keys": {"signed_curve25519:AAAA": {"key": "otk", "signatures": {}}}})
        assert status == 200
        u.device = device
    status, body = fa.request("GET", f"{F1}/user/devices/{quote(owner.user_id)}", sign_as=b)
    assert status == 200 and body["user_id"] == owner.user_id
    assert [d["device_id"] for d in body["devices"]] == [owner.device]
    assert body["devices"][0]["keys"]["keys"][f"ed25519:{owner.device}"] == "ed"
    assert fa.request("GET", f"{F1}/user/devices/{quote(walled.user_id)}", sign_as=b)[0] == 404

    status, body = fa.request("POST", f"{F1}/user/keys/query",
                              {"device_keys": {owner.user_id: [], walled.user_id: []}}, sign_as=b)
    assert status == 200 and list(body["device_keys"]) == [owner.user_id]
    assert owner.device in body["device_keys"][owner.user_id]

    status, body = fa.request("POST", f"{F1}/user/keys/claim", {"one_time_keys": {
        owner.user_id: {owner.device: "signed_curve25519"}, walled.user_id: {walled.device: "signed_curve25519"}}},
        sign_as=b)
    assert status == 200
    assert body["one_time_keys"] == {owner.user_id: {owner.device: {"signed_curve25519:AAAA": {
        "key": "otk", "signatures": {}}}}}
    assert fa.request("POST", f"{F1}/user/keys/claim", {"one_time_keys": []}, sign_as=b)[1]["errcode"] == "M_BAD_JSON"


def test_hierarchy_and_openid(servers):
    a, b = servers
    fa = FedHttp(a)
    owner = user(a, "spaceowner")
    _, space = owner.request("POST", f"{V3}/createRoom", {"preset": "public_chat",
                                                          "creation_content": {"type": "m.space"}, "name": "Space"})
    _, child = owner.request("POST", f"{V3}/createRoom", {"preset": "public_chat", "name": "Child"})
    _, hidden = owner.request("POST", f"{V3}/createRoom", {"preset": "private_chat", "name": "Hidden"})
    for room in (child, hidden):
        owner.request("PUT", f"{V3}/rooms/{space['room_id']}/state/m.space.child/{room['room_id']}",
                      {"via": [a.server_name]})
    status, body = fa.request("GET", f"{F1}/hierarchy/{quote(space['room_id'])}", sign_as=b)
    assert status == 200 and body["room"]["room_id"] == space["room_id"]
    assert [c["room_id"] for c in body["children"]] == [child["room_id"]]
    assert body["inaccessible_children"] == [hidden["room_id"]]
    assert fa.request("GET", f"{F1}/hierarchy/{quote(hidden['room_id'])}", sign_as=b)[0] == 404

    _, token = owner.request("POST", f"{V3}/user/{quote(owner.user_id)}/openid/request_token", {})
    status, body = fa.request("GET", f"{F1}/openid/userinfo?access_token={token['access_token']}")
    assert status == 200 and body == {"sub": owner.user_id}
