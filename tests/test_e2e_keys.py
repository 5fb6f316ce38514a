"""End-to-end encryption keys and server-side key backup over raw HTTP: device, one-time
and fallback keys, claiming (including concurrent claims), cross-signing keys behind
user-interactive auth, signatures, /keys/changes and /room_keys."""
from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import quote

import psycopg2
from signedjson.key import generate_signing_key, get_verify_key
from signedjson.sign import sign_json
from unpaddedbase64 import encode_base64

from storage import e2e_keys as e2e_store
from tests.server_harness import Http

V3 = "/_matrix/client/v3"
PASSWORD = "secret-pw"  # what Http.register uses
ALG = "signed_curve25519"


@dataclass
class Client:
    http: Http
    user_id: str
    device_id: str

    def req(self, method: str, path: str, body=None):
        return self.http.request(method, V3 + path, body)


def new_client(server, unique, prefix: str = "u") -> Client:
    http = Http(server.base_url)
    reg = http.register(unique(prefix))
    http.token = reg["access_token"]
    return Client(http, reg["user_id"], reg["device_id"])


def pub(signing_key) -> str:
    return encode_base64(get_verify_key(signing_key).encode())


def device_keys(c: Client, signing_key) -> dict:
    return sign_json({
        "user_id": c.user_id, "device_id": c.device_id,
        "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
        "keys": {f"curve25519:{c.device_id}": "curve" + c.device_id,
                 f"ed25519:{c.device_id}": pub(signing_key)},
    }, c.user_id, signing_key)


def otks(prefix: str, n: int) -> dict:
    return {f"{ALG}:{prefix}{i}": {"key": f"otk-{prefix}-{i}"} for i in range(n)}


def fallback(key_id: str = "FB1") -> dict:
    return {f"{ALG}:{key_id}": {"key": f"fallback-{key_id}", "fallback": True}}


def claim(c: Client, target: Client) -> dict:
    status, body = c.req("POST", "/keys/claim", {"one_time_keys": {target.user_id: {target.device_id: ALG}}})
    assert status == 200, body
    return body["one_time_keys"].get(target.user_id, {}).get(target.device_id, {})


def cross_signing_set(c: Client):
    master, ssk, usk = (generate_signing_key(n) for n in ("m", "s", "u"))
    master.version = pub(master)  # sign_json names the signature ed25519:<version>

    def key(usage, k, signed: bool):
        obj = {"user_id": c.user_id, "usage": [usage], "keys": {f"ed25519:{pub(k)}": pub(k)}}
        return sign_json(obj, c.user_id, master) if signed else obj

    body = {"master_key": key("master", master, False),
            "self_signing_key": key("self_signing", ssk, True),
            "user_signing_key": key("user_signing", usk, True)}
    ssk.version, usk.version = pub(ssk), pub(usk)
    return body, master, ssk, usk


# ---- device, one-time and fallback keys ----------------------------------------------------

def test_upload_query_claim_and_fallback(server, unique):
    alice, bob = new_client(server, unique, "alice"), new_client(server, unique, "bob")
    dev_key = generate_signing_key(alice.device_id)
    keys = device_keys(alice, dev_key)

    wrong = dict(keys, device_id="SOMEONEELSE")
    status, body = alice.req("POST", "/keys/upload", {"device_keys": wrong})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    status, body = alice.req("POST", "/keys/upload", {"device_keys": dict(keys, user_id=bob.user_id)})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")

    status, body = alice.req("POST", "/keys/upload", {
        "device_keys": keys, "one_time_keys": otks("A", 3), "fallback_keys": fallback()})
    assert status == 200, body
    assert body["one_time_key_counts"] == {ALG: 3}
    # A later batch is handed out after the first one.
    status, body = alice.req("POST", "/keys/upload", {"one_time_keys": otks("B", 2)})
    assert body["one_time_key_counts"] == {ALG: 5}
    # The same key again is fine; a different key under a used id is not.
    status, body = alice.req("POST", "/keys/upload", {"one_time_keys": otks("A", 1)})
    assert (status, body["one_time_key_counts"]) == (200, {ALG: 5})
    status, body = alice.req("POST", "/keys/upload", {"one_time_keys": {f"{ALG}:A0": {"key": "other"}}})
    assert status == 400, body

    assert alice.req("PUT", f"/devices/{alice.device_id}", {"display_name": "Alice's phone"})[0] == 200
    status, body = bob.req("POST", "/keys/query", {"device_keys": {alice.user_id: []}})
    assert status == 200, body
    assert body["failures"] == {}
    got = body["device_keys"][alice.user_id][alice.device_id]
    assert got["unsigned"] == {"device_display_name": "Alice's phone"}
    assert {k: v for k, v in got.items() if k != "unsigned"} == keys
    status, body = bob.req("POST", "/keys/query", {"device_keys": {alice.user_id: ["NOSUCHDEVICE"]}})
    assert body["device_keys"] == {alice.user_id: {}}
    status, body = bob.req("POST", "/keys/query", {"device_keys": {alice.user_id: "all"}})
    assert status == 400

    claimed = [claim(bob, alice) for _ in range(5)]
    ids = [next(iter(c)) for c in claimed]
    assert sorted(ids[:3]) == [f"{ALG}:A{i}" for i in range(3)]
    assert sorted(ids[3:]) == [f"{ALG}:B{i}" for i in range(2)]
    assert claimed[0][ids[0]] == otks("A", 3)[ids[0]]
    status, body = alice.req("POST", "/keys/upload", {})
    assert body["one_time_key_counts"] == {ALG: 0}

    # One-time keys exhausted: the fallback key, again and again.
    for _ in range(2):
        assert claim(bob, alice) == fallback()
    # Nothing for an unknown device; remote users are reported as failures.
    status, body = bob.req("POST", "/keys/claim", {"one_time_keys": {
        alice.user_id: {"NOSUCHDEVICE": ALG}, "@x:elsewhere.example": {"D": ALG}}})
    assert status == 200 and body["one_time_keys"] == {}
    assert "elsewhere.example" in body["failures"]

    # A new fallback key replaces the old one.
    assert alice.req("POST", "/keys/upload", {"fallback_keys": fallback("FB2")})[0] == 200
    assert claim(bob, alice) == fallback("FB2")


def test_concurrent_claims_never_share_a_key(server, unique):
    alice = new_client(server, unique, "alice")
    claimers = [new_client(server, unique, "claimer") for _ in range(4)]
    status, _ = alice.req("POST", "/keys/upload", {
        "device_keys": device_keys(alice, generate_signing_key(alice.device_id)),
        "one_time_keys": otks("K", 20), "fallback_keys": fallback()})
    assert status == 200

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda i: claim(claimers[i % 4], alice), range(40)))
    ids = [next(iter(r)) for r in results]
    one_time = [i for i in ids if i != f"{ALG}:FB1"]
    assert sorted(one_time) == sorted(otks("K", 20))  # every key once, none twice
    assert ids.count(f"{ALG}:FB1") == 20


def test_deleting_device_keys(server, unique):
    alice, bob = new_client(server, unique, "alice"), new_client(server, unique, "bob")
    alice.req("POST", "/keys/upload", {
        "device_keys": device_keys(alice, generate_signing_key(alice.device_id)),
        "one_time_keys": otks("A", 2), "fallback_keys": fallback()})
    conn = psycopg2.connect(server.dsn())
    try:
        with conn, conn.cursor() as cur:
            e2e_store.delete_device_keys(cur, alice.user_id, [alice.device_id])
    finally:
        conn.close()
    status, body = bob.req("POST", "/keys/query", {"device_keys": {alice.user_id: []}})
    assert body["device_keys"] == {alice.user_id: {}}
    assert claim(bob, alice) == {}


# ---- cross-signing -----------------------------------------------------------------------

def test_cross_signing_upload_and_uia(server, unique):
    alice, bob = new_client(server, unique, "alice"), new_client(server, unique, "bob")
    body, master, ssk, usk = cross_signing_set(alice)

    # First upload: no master key yet, so no user-interactive auth.
    status, resp = alice.req("POST", "/keys/device_signing/upload", body)
    assert (status, resp) == (200, {})
    # Exactly the same keys again (a retry): still no auth needed.
    status, resp = alice.req("POST", "/keys/device_signing/upload", body)
    assert (status, resp) == (200, {})

    status, own = alice.req("POST", "/keys/query", {"device_keys": {alice.user_id: []}})
    assert own["master_keys"][alice.user_id] == body["master_key"]
    assert own["self_signing_keys"][alice.user_id] == body["self_signing_key"]
    assert own["user_signing_keys"][alice.user_id] == body["user_signing_key"]
    status, other = bob.req("POST", "/keys/query", {"device_keys": {alice.user_id: []}})
    assert other["master_keys"][alice.user_id] == body["master_key"]
    assert other["self_signing_keys"][alice.user_id] == body["self_signing_key"]
    assert alice.user_id not in other["user_signing_keys"]

    # Replacing keys now needs the password.
    new_body, *_ = cross_signing_set(alice)
    status, resp = alice.req("POST", "/keys/device_signing/upload", new_body)
    assert status == 401, resp
    assert {"stages": ["m.login.password"]} in resp["flows"]
    assert resp["session"]
    auth = {"type": "m.login.password", "session": resp["session"], "password": "wrong",
            "identifier": {"type": "m.id.user", "user": alice.user_id}}
    status, resp = alice.req("POST", "/keys/device_signing/upload", dict(new_body, auth=auth))
    assert (status, resp["errcode"]) == (401, "M_FORBIDDEN")
    auth["password"] = PASSWORD
    status, resp = alice.req("POST", "/keys/device_signing/upload", dict(new_body, auth=auth))
    assert (status, resp) == (200, {})
    status, own = alice.req("POST", "/keys/query", {"device_keys": {alice.user_id: []}})
    assert own["master_keys"][alice.user_id] == new_body["master_key"]

    # A self-signing key not signed by the master key is refused.
    bad = copy.deepcopy(new_body)
    bad_ssk = generate_signing_key("x")
    bad["self_signing_key"] = sign_json(
        {"user_id": alice.user_id, "usage": ["self_signing"],
         "keys": {f"ed25519:{pub(bad_ssk)}": pub(bad_ssk)}}, alice.user_id, bad_ssk)
    del bad["master_key"]
    status, resp = alice.req("POST", "/keys/device_signing/upload", dict(bad, auth=auth))
    assert (status, resp["errcode"]) == (400, "M_INVALID_SIGNATURE")

    # Keys for someone else are refused.
    carol = new_client(server, unique, "carol")
    status, resp = carol.req("POST", "/keys/device_signing/upload", body)
    assert (status, resp["errcode"]) == (400, "M_INVALID_PARAM")


def test_signatures_upload_shows_in_query(server, unique):
    alice, bob = new_client(server, unique, "alice"), new_client(server, unique, "bob")
    dev_key = generate_signing_key(alice.device_id)
    keys = device_keys(alice, dev_key)
    assert alice.req("POST", "/keys/upload", {"device_keys": keys})[0] == 200
    a_body, a_master, a_ssk, _ = cross_signing_set(alice)
    assert alice.req("POST", "/keys/device_signing/upload", a_body)[0] == 200
    b_body, _, _, b_usk = cross_signing_set(bob)
    assert bob.req("POST", "/keys/device_signing/upload", b_body)[0] == 200
    a_master_pub = pub(a_master)

    # Alice's self-signing key signs her device; her device signs her master key.
    signed_device = sign_json(copy.deepcopy(keys), alice.user_id, a_ssk)
    signed_master = sign_json(copy.deepcopy(a_body["master_key"]), alice.user_id, dev_key)
    status, resp = alice.req("POST", "/keys/signatures/upload", {
        alice.user_id: {alice.device_id: signed_device, a_master_pub: signed_master}})
    assert (status, resp) == (200, {"failures": {}})
    # Bob's user-signing key signs Alice's master key.
    bob_signed = sign_json(copy.deepcopy(a_body["master_key"]), bob.user_id, b_usk)
    status, resp = bob.req("POST", "/keys/signatures/upload", {alice.user_id: {a_master_pub: bob_signed}})
    assert (status, resp) == (200, {"failures": {}})

    status, seen_by_bob = bob.req("POST", "/keys/query", {"device_keys": {alice.user_id: []}})
    device = seen_by_bob["device_keys"][alice.user_id][alice.device_id]
    assert device["signatures"][alice.user_id] == signed_device["signatures"][alice.user_id]
    master = seen_by_bob["master_keys"][alice.user_id]
    assert master["signatures"][alice.user_id] == signed_master["signatures"][alice.user_id]
    assert master["signatures"][bob.user_id] == bob_signed["signatures"][bob.user_id]
    # Bob's signature of Alice is his business: Alice does not see it.
    status, seen_by_alice = alice.req("POST", "/keys/query", {"device_keys": {alice.user_id: []}})
    assert bob.user_id not in seen_by_alice["master_keys"][alice.user_id]["signatures"]

    # A forged signature, a changed object and an unknown key all fail individually.
    forged = copy.deepcopy(keys)
    forged["signatures"][alice.user_id][f"ed25519:{pub(a_ssk)}"] = "AAAA" * 22
    changed = sign_json(dict(copy.deepcopy(keys), algorithms=["other"]), alice.user_id, a_ssk)
    status, resp = alice.req("POST", "/keys/signatures/upload", {
        alice.user_id: {alice.device_id: forged, "NOPE": changed}})
    assert status == 200
    assert resp["failures"][alice.user_id][alice.device_id]["errcode"] == "M_INVALID_SIGNATURE"
    assert "NOPE" in resp["failures"][alice.user_id]


def test_key_changes(server, unique):
    alice, bob, carol = (new_client(server, unique, n) for n in ("alice", "bob", "carol"))
    status, room = alice.req("POST", "/createRoom", {"preset": "public_chat"})
    assert status == 200, room
    assert bob.req("POST", f"/join/{quote(room['room_id'])}", {})[0] == 200
    status, sync = bob.req("GET", "/sync?timeout=0")
    assert status == 200, sync
    since = sync["next_batch"]

    for c in (alice, carol):
        assert c.req("POST", "/keys/upload", {
            "device_keys": device_keys(c, generate_signing_key(c.device_id))})[0] == 200
    status, sync = bob.req("GET", f"/sync?timeout=0&since={quote(since)}")
    assert status == 200, sync
    upto = sync["next_batch"]

    status, body = bob.req("GET", f"/keys/changes?from={quote(since)}&to={quote(upto)}")
    assert status == 200, body
    assert body == {"changed": [alice.user_id], "left": []}  # carol shares no room with bob
    status, body = bob.req("GET", f"/keys/changes?from={quote(upto)}&to={quote(upto)}")
    assert body["changed"] == []
    status, body = bob.req("GET", "/keys/changes?from=garbage&to=x")
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    assert bob.req("GET", "/keys/changes")[0] == 400


# ---- key backup --------------------------------------------------------------------------

BACKUP_ALG = "m.megolm_backup.v1.curve25519-aes-sha2"


def key_data(index: int, forwarded: int = 0, verified: bool = False, tag: str = "x") -> dict:
    return {"first_message_index": index, "forwarded_count": forwarded, "is_verified": verified,
            "session_data": {"ephemeral": "e", "ciphertext": tag, "mac": "m"}}


def test_key_backup(server, unique):
    alice = new_client(server, unique, "alice")
    room = "!room:test.local"
    status, body = alice.req("GET", "/room_keys/version")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    assert alice.req("GET", "/room_keys/keys?version=1")[1]["errcode"] == "M_NOT_FOUND"

    status, body = alice.req("POST", "/room_keys/version", {"algorithm": BACKUP_ALG,
                                                            "auth_data": {"public_key": "abc"}})
    assert status == 200 and isinstance(body["version"], str)
    v1 = body["version"]
    status, info = alice.req("GET", "/room_keys/version")
    assert info == {"algorithm": BACKUP_ALG, "auth_data": {"public_key": "abc"}, "count": 0,
                    "etag": info["etag"], "version": v1}
    assert isinstance(info["etag"], str)
    assert alice.req("GET", f"/room_keys/version/{v1}")[1] == info

    session_path = f"/room_keys/keys/{quote(room)}/sess1?version={v1}"
    status, put = alice.req("PUT", session_path, key_data(5, tag="first"))
    assert status == 200 and put["count"] == 1 and put["etag"] != info["etag"]
    # A worse key (later first message index) is ignored; a verified one wins.
    status, same = alice.req("PUT", session_path, key_data(9, tag="worse"))
    assert same == put
    status, better = alice.req("PUT", session_path, key_data(7, verified=True, tag="verified"))
    assert better["count"] == 1 and better["etag"] != put["etag"]
    alice.req("PUT", session_path, key_data(0, tag="unverified"))
    status, put = alice.req("PUT", f"/room_keys/keys/{quote(room)}?version={v1}",
                            {"sessions": {"sess2": key_data(3, forwarded=2)}})
    assert put["count"] == 2
    alice.req("PUT", f"/room_keys/keys?version={v1}",
              {"rooms": {room: {"sessions": {"sess2": key_data(3, forwarded=1, tag="fewer")}}}})

    status, got = alice.req("GET", session_path)
    assert got == key_data(7, verified=True, tag="verified")
    status, got = alice.req("GET", f"/room_keys/keys?version={v1}")
    assert got["rooms"][room]["sessions"]["sess2"] == key_data(3, forwarded=1, tag="fewer")
    status, got = alice.req("GET", f"/room_keys/keys/{quote('!other:test.local')}?version={v1}")
    assert got == {"sessions": {}}
    status, got = alice.req("GET", f"/room_keys/keys/{quote(room)}/nosuch?version={v1}")
    assert (status, got["errcode"]) == (404, "M_NOT_FOUND")
    assert alice.req("PUT", session_path, {"first_message_index": "1"})[0] == 400
    assert alice.req("GET", "/room_keys/version")[1]["count"] == 2

    # Only auth_data may change, and the algorithm must match.
    status, body = alice.req("PUT", f"/room_keys/version/{v1}", {"algorithm": "other", "auth_data": {}})
    assert (status, body["errcode"]) == (400, "M_INVALID_PARAM")
    status, _ = alice.req("PUT", f"/room_keys/version/{v1}",
                          {"algorithm": BACKUP_ALG, "auth_data": {"public_key": "def"}})
    assert status == 200
    assert alice.req("GET", "/room_keys/version")[1]["auth_data"] == {"public_key": "def"}

    # A new backup makes the old version read-only.
    status, body = alice.req("POST", "/room_keys/version", {"algorithm": BACKUP_ALG, "auth_data": {}})
    v2 = body["version"]
    assert v2 != v1
    status, body = alice.req("PUT", session_path, key_data(0))
    assert (status, body["errcode"], body["current_version"]) == (403, "M_WRONG_ROOM_KEYS_VERSION", v2)
    status, body = alice.req("PUT", "/room_keys/keys?version=nonsense", {"rooms": {}})
    assert (status, body["current_version"]) == (403, v2)
    assert alice.req("GET", "/room_keys/version")[1]["version"] == v2
    assert alice.req("GET", f"/room_keys/keys?version={v1}")[1]["rooms"][room]["sessions"]

    # Deleting keys and versions.
    status, body = alice.req("DELETE", session_path)
    assert status == 200 and body["count"] == 1
    status, body = alice.req("DELETE", f"/room_keys/keys?version={v1}")
    assert body["count"] == 0
    assert alice.req("DELETE", f"/room_keys/version/{v2}") == (200, {})
    assert alice.req("DELETE", f"/room_keys/version/{v2}") == (200, {})  # already deleted
    assert alice.req("DELETE", "/room_keys/version/999")[0] == 404
    assert alice.req("GET", f"/room_keys/version/{v2}")[0] == 404
    assert alice.req("GET", "/room_keys/version")[1]["version"] == v1
    assert alice.req("DELETE", f"/room_keys/version/{v1}")[0] == 200
    status, body = alice.req("GET", "/room_keys/version")
    assert (status, body) == (404, {"errcode": "M_NOT_FOUND", "error": "No current backup version"})
    status, body = alice.req("PUT", session_path, key_data(0))
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    status, body = alice.req("POST", "/room_keys/version", {"algorithm": BACKUP_ALG, "auth_data": {}})
    assert int(body["version"]) > int(v2)  # numbers are never reused
