"""The spec's error codes and HTTP statuses over raw HTTP, CORS, and a fuzz check that no
request body, however odd, makes the server answer 500 or log an unhandled error."""
from __future__ import annotations

import itertools
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.server_harness import Http

V3 = "/_matrix/client/v3"
_counter = itertools.count()


def fresh(prefix: str = "e") -> str:
    return f"{prefix}{next(_counter)}x{uuid.uuid4().hex[:6]}"


def _q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def assert_error(result, status: int, errcode: str) -> dict:
    got_status, body = result
    assert (got_status, body.get("errcode") if isinstance(body, dict) else body) == (status, errcode), body
    assert isinstance(body.get("error"), str), body
    return body


@pytest.fixture(scope="module")
def alice(server):
    return Http(server.base_url).register(fresh("alice"))


@pytest.fixture(scope="module")
def a(server, alice) -> Http:
    return Http(server.base_url, alice["access_token"])


@pytest.fixture(scope="module")
def room_id(a) -> str:
    status, body = a.request("POST", f"{V3}/createRoom", {"name": "errors"})
    assert status == 200, body
    return body["room_id"]


def raw_request(url: str, method: str = "GET", data: bytes | None = None,
                headers: dict | None = None):
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


# ---------------------------------------------------------------------------------
# Bodies
# ---------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", [b"{not json", b"{\"a\": 1", b"\xff\xfe{}", b"{\"a\": NaN}",
                                 b"{\"a\": Infinity}", b"", b"   "])
def test_not_json(a, room_id, raw):
    assert_error(a.request("PUT", f"{V3}/rooms/{_q(room_id)}/send/m.room.message/{fresh('t')}",
                           raw=raw), 400, "M_NOT_JSON")
    if raw.strip():
        assert_error(a.request("POST", f"{V3}/createRoom", raw=raw), 400, "M_NOT_JSON")
        assert_error(a.request("POST", f"{V3}/login", raw=raw), 400, "M_NOT_JSON")


@pytest.mark.parametrize("raw", [b"[]", b"[{\"a\": 1}]", b"\"string\"", b"42", b"null", b"true"])
def test_non_object_json_is_bad_json(a, room_id, raw):
    assert_error(a.request("PUT", f"{V3}/rooms/{_q(room_id)}/send/m.room.message/{fresh('t')}",
                           raw=raw), 400, "M_BAD_JSON")
    assert_error(a.request("PUT", f"{V3}/rooms/{_q(room_id)}/state/com.example.x/k", raw=raw),
                 400, "M_BAD_JSON")
    assert_error(a.request("POST", f"{V3}/createRoom", raw=raw), 400, "M_BAD_JSON")
    assert_error(a.request("POST", f"{V3}/register", raw=raw), 400, "M_BAD_JSON")


@pytest.mark.parametrize("body", [
    {"name": 5}, {"topic": ["x"]}, {"invite": "@x:test.local"}, {"invite": [5]},
    {"initial_state": {}}, {"initial_state": [{"type": 1, "content": {}}]},
    {"initial_state": [{"type": "a.b", "content": []}]}, {"creation_content": []},
    {"power_level_content_override": "x"},
])
def test_create_room_wrong_field_types(a, body):
    assert_error(a.request("POST", f"{V3}/createRoom", body), 400, "M_BAD_JSON")


def test_wrong_field_types_elsewhere(server, a):
    http = Http(server.base_url)
    assert_error(http.request("POST", f"{V3}/register",
                              {"username": 5, "password": "x", "auth": {"type": "m.login.dummy"}}),
                 400, "M_BAD_JSON")
    assert_error(http.request("POST", f"{V3}/register",
                              {"username": fresh("w"), "password": ["x"],
                               "auth": {"type": "m.login.dummy"}}), 400, "M_BAD_JSON")
    assert_error(a.request("POST", f"{V3}/user_directory/search", {"search_term": 1}),
                 400, "M_BAD_JSON")
    assert_error(a.request("POST", f"{V3}/publicRooms", {"filter": "x"}), 400, "M_BAD_JSON")


# ---------------------------------------------------------------------------------
# Authentication
# ---------------------------------------------------------------------------------

def test_missing_and_unknown_token(server, alice):
    http = Http(server.base_url)
    whoami = f"{V3}/account/whoami"
    assert_error(http.request("GET", whoami), 401, "M_MISSING_TOKEN")
    assert_error(http.request("GET", whoami + "?access_token="), 401, "M_MISSING_TOKEN")
    assert_error(http.request("POST", f"{V3}/createRoom", {}), 401, "M_MISSING_TOKEN")
    body = assert_error(http.request("GET", whoami, token="nope-" + fresh()), 401, "M_UNKNOWN_TOKEN")
    assert body.get("soft_logout", False) is False
    assert_error(http.request("GET", whoami + "?access_token=nope" + fresh()), 401, "M_UNKNOWN_TOKEN")
    # Both forms of a good token work.
    status, me = http.request("GET", whoami, token=alice["access_token"])
    assert status == 200 and me["user_id"] == alice["user_id"]
    status, me = http.request("GET", whoami + "?access_token=" + _q(alice["access_token"]))
    assert status == 200 and me["user_id"] == alice["user_id"]
    # A logged-out token is unknown afterwards, in both forms.
    login = Http(server.base_url).request("POST", f"{V3}/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": alice["user_id"]},
        "password": "secret-pw"})
    assert login[0] == 200, login
    tok = login[1]["access_token"]
    assert http.request("POST", f"{V3}/logout", {}, token=tok)[0] == 200
    assert_error(http.request("GET", whoami, token=tok), 401, "M_UNKNOWN_TOKEN")
    assert_error(http.request("GET", whoami + "?access_token=" + _q(tok)), 401, "M_UNKNOWN_TOKEN")
    # The original session is unaffected.
    assert http.request("GET", whoami, token=alice["access_token"])[0] == 200


# ---------------------------------------------------------------------------------
# Permissions, missing things, identifiers
# ---------------------------------------------------------------------------------

def test_forbidden(server, a, room_id):
    outsider = Http(server.base_url)
    outsider.token = outsider.register(fresh("out"))["access_token"]
    assert_error(outsider.request("PUT", f"{V3}/rooms/{_q(room_id)}/send/m.room.message/t1",
                                  {"msgtype": "m.text", "body": "hi"}), 403, "M_FORBIDDEN")
    # private_chat preset: invite-only
    assert_error(outsider.request("POST", f"{V3}/rooms/{_q(room_id)}/join", {}), 403, "M_FORBIDDEN")
    assert_error(Http(server.base_url).request("POST", f"{V3}/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": fresh("nobody")},
        "password": "x"}), 403, "M_FORBIDDEN")


def test_not_found(a, room_id):
    assert_error(a.request("GET", f"{V3}/rooms/{_q(room_id)}/event/{_q('$doesnotexist')}"),
                 404, "M_NOT_FOUND")
    assert_error(a.request("GET", f"{V3}/rooms/{_q(room_id)}/state/com.example.none/"),
                 404, "M_NOT_FOUND")
    assert_error(a.request("GET", f"{V3}/directory/room/{_q('#' + fresh('none') + ':test.local')}"),
                 404, "M_NOT_FOUND")


def test_user_in_use_and_invalid_username(server, alice):
    http = Http(server.base_url)
    local = alice["user_id"][1:].split(":")[0]
    reg = {"password": "pw", "auth": {"type": "m.login.dummy"}}
    assert_error(http.request("POST", f"{V3}/register", {"username": local, **reg}), 400, "M_USER_IN_USE")
    assert_error(http.request("POST", f"{V3}/register", {"username": local.upper(), **reg}),
                 400, "M_USER_IN_USE")
    assert_error(http.request("GET", f"{V3}/register/available?username={local}"), 400, "M_USER_IN_USE")
    for bad in ("has space", "colon:", "ümlaut", "x" * 300, ""):
        if bad == "":
            continue
        assert_error(http.request("POST", f"{V3}/register", {"username": bad, **reg}),
                     400, "M_INVALID_USERNAME")
        assert_error(http.request("GET", f"{V3}/register/available?username={_q(bad)}"),
                     400, "M_INVALID_USERNAME")


def test_room_in_use_and_unsupported_version(a):
    name = fresh("alias")
    status, body = a.request("POST", f"{V3}/createRoom", {"room_alias_name": name})
    assert status == 200, body
    before = a.request("GET", f"{V3}/joined_rooms")[1]["joined_rooms"]
    assert_error(a.request("POST", f"{V3}/createRoom", {"room_alias_name": name}), 400, "M_ROOM_IN_USE")
    for version in ("999", "13", "0", 12, None):
        assert_error(a.request("POST", f"{V3}/createRoom", {"room_version": version}),
                     400, "M_UNSUPPORTED_ROOM_VERSION")
    assert a.request("GET", f"{V3}/joined_rooms")[1]["joined_rooms"] == before


def test_too_large(a, room_id):
    big = json.dumps({"msgtype": "m.text", "body": "x" * (1024 * 1024 + 10)}).encode()
    assert_error(a.request("PUT", f"{V3}/rooms/{_q(room_id)}/send/m.room.message/{fresh('t')}",
                           raw=big), 413, "M_TOO_LARGE")
    assert_error(a.request("POST", f"{V3}/createRoom", raw=big), 413, "M_TOO_LARGE")
    txn = fresh("t")
    assert_error(a.request("PUT", f"{V3}/rooms/{_q(room_id)}/send/m.room.message/{txn}",
                           {"msgtype": "m.text", "body": "y" * 70000}), 413, "M_TOO_LARGE")
    assert_error(a.request("PUT", f"{V3}/rooms/{_q(room_id)}/state/com.example.big/k",
                           {"v": "z" * 70000}), 413, "M_TOO_LARGE")
    # Multi-byte characters count as bytes: 30000 three-byte characters are ~90 kB.
    assert_error(a.request("PUT", f"{V3}/rooms/{_q(room_id)}/send/m.room.message/{fresh('t')}",
                           {"msgtype": "m.text", "body": "中" * 30000}), 413, "M_TOO_LARGE")
    # Nothing was stored, the room still works, and the failed txn id is reusable.
    status, body = a.request("PUT", f"{V3}/rooms/{_q(room_id)}/send/m.room.message/{txn}",
                             {"msgtype": "m.text", "body": "small"})
    assert status == 200, body
    status, page = a.request("GET", f"{V3}/rooms/{_q(room_id)}/messages?dir=b&limit=50")
    assert status == 200
    assert page["chunk"][0]["event_id"] == body["event_id"]
    assert all(len(json.dumps(e)) < 65536 for e in page["chunk"])


def test_unrecognized(server, a):
    assert_error(a.request("GET", "/_matrix/client/v3/no/such/endpoint"), 404, "M_UNRECOGNIZED")
    assert_error(Http(server.base_url).request("GET", "/_matrix/nothing"), 404, "M_UNRECOGNIZED")
    assert_error(a.request("DELETE", f"{V3}/createRoom"), 405, "M_UNRECOGNIZED")
    assert_error(a.request("POST", f"{V3}/account/whoami", {}), 405, "M_UNRECOGNIZED")
    assert_error(Http(server.base_url).request("PUT", "/_matrix/client/versions", {}),
                 405, "M_UNRECOGNIZED")


def test_invalid_param(a, room_id):
    base = f"{V3}/rooms/{_q(room_id)}/messages"
    assert_error(a.request("GET", base + "?dir=x"), 400, "M_INVALID_PARAM")
    assert_error(a.request("GET", base + "?dir=B"), 400, "M_INVALID_PARAM")
    for bad in ("garbage", "t", "tx_y", "s", "sabc", "t1_", "x1_2"):
        assert_error(a.request("GET", f"{base}?dir=b&from={_q(bad)}"), 400, "M_INVALID_PARAM")
        assert_error(a.request("GET", f"{base}?dir=b&to={_q(bad)}"), 400, "M_INVALID_PARAM")
    assert_error(a.request("GET", base + "?dir=b&limit=abc"), 400, "M_INVALID_PARAM")
    assert_error(a.request("GET", base + "?dir=b&filter=" + _q("{bad")), 400, "M_INVALID_PARAM")
    assert_error(a.request("GET", base + "?dir=b&filter=" + _q('{"types": "x"}')), 400, "M_INVALID_PARAM")
    # A well-formed request still works.
    assert a.request("GET", base + "?dir=f&limit=3")[0] == 200


# ---------------------------------------------------------------------------------
# NUL characters (PostgreSQL text cannot hold them)
# ---------------------------------------------------------------------------------

def test_nul_characters_are_client_errors(server, a, alice, room_id):
    rid = _q(room_id)
    me = _q(alice["user_id"])
    cases = [
        ("PUT", f"{V3}/rooms/{rid}/send/m.room.message/t%00x", {"msgtype": "m.text", "body": "x"}),
        ("PUT", f"{V3}/rooms/{rid}/send/a%00b/{fresh('t')}", {"body": "x"}),
        ("PUT", f"{V3}/rooms/{rid}/state/a%00b/k", {"x": 1}),
        ("PUT", f"{V3}/rooms/{rid}/state/com.example.x/k%00", {"x": 1}),
        ("PUT", f"{V3}/rooms/{rid}/redact/%24a%00/{fresh('t')}", {}),
        ("GET", f"{V3}/rooms/{rid}/event/%24a%00", None),
        ("GET", f"{V3}/rooms/!a%00:test.local/messages", None),
        ("GET", f"{V3}/rooms/{rid}/messages?filter=" + _q('{"types": ["\\u0000"]}'), None),
        ("POST", f"{V3}/join/%23a:b%00", {}),
        ("POST", f"{V3}/rooms/{rid}/invite", {"user_id": "@a:b\u0000"}),
        ("POST", f"{V3}/createRoom", {"initial_state": [{"type": "a\u0000b", "content": {}}]}),
        ("POST", f"{V3}/createRoom", {"initial_state": [{"type": "ab", "state_key": "\u0000",
                                                         "content": {}}]}),
        ("POST", f"{V3}/user_directory/search", {"search_term": "a\u0000"}),
        ("PUT", f"{V3}/profile/{me}/displayname", {"displayname": "x\u0000y"}),
        ("GET", f"{V3}/profile/%40a%00:test.local", None),
        ("POST", f"{V3}/login", {"type": "m.login.password", "password": "x",
                                 "identifier": {"type": "m.id.user", "user": "a\u0000"}}),
    ]
    before = a.request("GET", f"{V3}/joined_rooms")[1]["joined_rooms"]
    for method, path, body in cases:
        status, resp = a.request(method, path, body)
        assert 400 <= status < 500, (method, path, body, resp)
        assert isinstance(resp, dict) and resp.get("errcode"), resp
    assert a.request("GET", f"{V3}/joined_rooms")[1]["joined_rooms"] == before
    # NUL inside content is fine: JSON escapes it, and it reads back unchanged.
    status, sent = a.request("PUT", f"{V3}/rooms/{rid}/send/m.room.message/{fresh('t')}",
                             {"msgtype": "m.text", "body": "a\u0000b"})
    assert status == 200, sent
    ev = a.request("GET", f"{V3}/rooms/{rid}/event/{_q(sent['event_id'])}")[1]
    assert ev["content"]["body"] == "a\x00b"
    status, sent = a.request("PUT", f"{V3}/rooms/{rid}/state/m.room.member/{me}",
                             {"membership": "join", "displayname": "nul\u0000name"})
    assert status == 200, sent


def test_bad_event_does_not_fail_other_rooms_events(server):
    """Events are committed in groups: a refused event must not take others down with it."""
    users = []
    for _ in range(4):
        h = Http(server.base_url)
        h.token = h.register(fresh("grp"))["access_token"]
        status, room = h.request("POST", f"{V3}/createRoom", {})
        assert status == 200, room
        users.append((h, room["room_id"]))
    barrier = threading.Barrier(len(users) * 2)

    def good(i):
        h, rid = users[i]
        barrier.wait()
        return [h.request("PUT", f"{V3}/rooms/{_q(rid)}/send/m.room.message/{fresh('g')}",
                          {"msgtype": "m.text", "body": str(n)})[0] for n in range(15)]

    def bad(i):
        h, rid = users[i]
        barrier.wait()
        return [h.request("PUT", f"{V3}/rooms/{_q(rid)}/state/com.example.bad/k%00{n}",
                          {"n": n})[0] for n in range(15)]

    with ThreadPoolExecutor(len(users) * 2) as pool:
        goods = [pool.submit(good, i) for i in range(len(users))]
        bads = [pool.submit(bad, i) for i in range(len(users))]
        assert all(s == 200 for f in goods for s in f.result()), [f.result() for f in goods]
        assert all(400 <= s < 500 for f in bads for s in f.result()), [f.result() for f in bads]


# ---------------------------------------------------------------------------------
# CORS
# ---------------------------------------------------------------------------------

def _check_cors(headers) -> None:
    assert headers.get("Access-Control-Allow-Origin") == "*"
    methods = headers.get("Access-Control-Allow-Methods", "")
    for m in ("GET", "POST", "PUT", "DELETE", "OPTIONS"):
        assert m in methods
    allowed = headers.get("Access-Control-Allow-Headers", "").lower()
    for h in ("authorization", "content-type", "x-requested-with"):
        assert h in allowed


def test_cors_headers(server, alice):
    base = server.base_url
    status, headers, _ = raw_request(base + "/_matrix/client/versions")
    assert status == 200
    _check_cors(headers)
    status, headers, _ = raw_request(base + f"{V3}/account/whoami")
    assert status == 401
    _check_cors(headers)
    status, headers, _ = raw_request(base + "/_matrix/client/v3/unknown")
    assert status == 404
    _check_cors(headers)
    status, headers, _ = raw_request(base + f"{V3}/account/whoami",
                                     headers={"Authorization": "Bearer " + alice["access_token"]})
    assert status == 200
    _check_cors(headers)
    # Preflight: answered without auth, for known and unknown paths alike.
    for path in (f"{V3}/account/whoami", f"{V3}/rooms/!x:test.local/send/m.room.message/1",
                 f"{V3}/createRoom", "/_matrix/client/v3/whatever"):
        status, headers, body = raw_request(base + path, method="OPTIONS", headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})
        assert status == 200, (path, body)
        _check_cors(headers)


# ---------------------------------------------------------------------------------
# createRoom is all or nothing
# ---------------------------------------------------------------------------------

def _rooms_created_by(server, user_id: str) -> int:
    conn = psycopg2.connect(server.dsn())
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM events WHERE sender = %s AND type = 'm.room.create'",
                        (user_id,))
            events = cur.fetchone()[0]
            cur.execute("SELECT count(*) FROM rooms WHERE creator = %s", (user_id,))
            rooms = cur.fetchone()[0]
    finally:
        conn.close()
    return events + rooms


@pytest.mark.parametrize("version", ["10", "11", "12"])
@pytest.mark.parametrize("body", [
    # The auth rules refuse the power levels themselves.
    {"power_level_content_override": {"users": {"@x:test.local": "high"}}},
    {"power_level_content_override": {"ban": "fifty"}},
    {"power_level_content_override": {"events": {"m.room.name": [1]}}},
    # The creator gives away the power the later events need (v12 creators keep infinite
    # power, so this one only fails in earlier versions).
    {"power_level_content_override": {"users_default": 0, "users": {}, "state_default": 200},
     "name": "x"},
    # An initial state event the auth rules refuse, after several accepted ones.
    {"initial_state": [{"type": "com.example.ok", "content": {"a": 1}},
                       {"type": "m.room.member", "state_key": "@someone:elsewhere.test",
                        "content": {"membership": "join"}}]},
    {"initial_state": [{"type": "m.room.create", "content": {}}]},
    {"initial_state": [{"type": "m.room.power_levels", "content": {"users_default": "x"}}]},
    # Too large an initial state event.
    {"initial_state": [{"type": "com.example.ok", "content": {"a": 1}},
                       {"type": "com.example.big", "content": {"v": "x" * 70000}}]},
])
def test_create_room_leaves_no_half_made_room(server, version, body):
    http = Http(server.base_url)
    user = http.register(fresh("half"))
    http.token = user["access_token"]
    before = http.request("GET", f"{V3}/joined_rooms")[1]["joined_rooms"]
    status, resp = http.request("POST", f"{V3}/createRoom",
                                {"room_version": version, "room_alias_name": fresh("half"), **body})
    if version == "12" and body.get("name") == "x":
        assert status == 200, resp  # the creator's power does not come from power levels
        return
    assert 400 <= status < 500, resp
    assert isinstance(resp, dict) and resp.get("errcode"), resp
    assert http.request("GET", f"{V3}/joined_rooms")[1]["joined_rooms"] == before
    assert _rooms_created_by(server, user["user_id"]) == 0
    # The server still works for this user afterwards, and the alias was not taken.
    status, ok = http.request("POST", f"{V3}/createRoom",
                              {"room_version": version, "room_alias_name": fresh("half2")})
    assert status == 200, ok
    assert http.request("GET", f"{V3}/joined_rooms")[1]["joined_rooms"] == before + [ok["room_id"]]


def test_failed_create_room_does_not_reserve_alias(a):
    name = fresh("keep")
    status, resp = a.request("POST", f"{V3}/createRoom", {
        "room_alias_name": name, "power_level_content_override": {"kick": "x"}})
    assert status == 403 or status == 400, resp
    assert_error(a.request("GET", f"{V3}/directory/room/{_q('#' + name + ':test.local')}"),
                 404, "M_NOT_FOUND")
    status, resp = a.request("POST", f"{V3}/createRoom", {"room_alias_name": name})
    assert status == 200, resp


# ---------------------------------------------------------------------------------
# Fuzz: never a 500
# ---------------------------------------------------------------------------------

FIELD_NAMES = ["username", "password", "auth", "type", "session", "name", "topic", "room_version",
               "initial_state", "invite", "preset", "visibility", "power_level_content_override",
               "creation_content", "is_direct", "room_alias_name", "limit", "since", "filter",
               "generic_search_term", "search_term", "identifier", "user", "msgtype", "body",
               "content", "state_key", "membership", "users", "events", "device_id",
               "initial_device_display_name", "inhibit_login", "m.relates_to", "redacts",
               "join_rule", "history_visibility", "alias", "url", "displayname"]

scalars = (st.none() | st.booleans()
           | st.integers(min_value=-(2**60), max_value=2**60)
           | st.floats(allow_nan=False, allow_infinity=False)
           | st.text(max_size=20)
           | st.sampled_from(["m.login.dummy", "m.login.password", "m.id.user", "public_chat",
                              "private_chat", "public", "private", "10", "11", "12",
                              "@someone:test.local", "m.room.member", "join", "invite", ""]))
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), children, max_size=5),
    max_leaves=20,
)
# Bodies shaped like real createRoom/state requests, so the fuzz gets past the first checks.
state_types = st.sampled_from(["m.room.name", "m.room.topic", "m.room.power_levels",
                               "m.room.join_rules", "m.room.member", "m.room.create",
                               "m.room.history_visibility", "m.room.guest_access",
                               "m.room.canonical_alias", "m.room.redaction", "com.example.x"])
pl_content = st.dictionaries(
    st.sampled_from(["users", "users_default", "events", "events_default", "state_default",
                     "ban", "kick", "redact", "invite", "notifications"]),
    json_values | st.integers(-200, 200)
    | st.dictionaries(st.sampled_from(["@someone:test.local", "m.room.name", "room", "x"]),
                      json_values | st.integers(-200, 200), max_size=3),
    max_size=5)
state_entry = st.fixed_dictionaries(
    {"type": state_types | st.text(max_size=10)},
    optional={"state_key": st.text(max_size=10) | st.sampled_from(["@someone:test.local"]) | json_values,
              "content": pl_content | st.dictionaries(st.sampled_from(FIELD_NAMES), json_values,
                                                      max_size=4) | json_values})
structured = st.fixed_dictionaries({}, optional={  # mostly valid, odd in the details
    "initial_state": st.lists(state_entry, max_size=3),
    "power_level_content_override": pl_content,
    "room_version": st.sampled_from(["10", "11", "12"]),
    "preset": st.sampled_from(["public_chat", "private_chat", "trusted_private_chat"]),
    "creation_content": st.dictionaries(st.sampled_from(["m.federate", "type", "room_version",
                                                         "creator", "additional_creators",
                                                         "predecessor"]), json_values, max_size=3),
    "name": st.text(max_size=10), "topic": st.text(max_size=10), "is_direct": json_values,
    "room_alias_name": st.text(max_size=10), "visibility": st.sampled_from(["public", "private"]),
})
odd_text = st.text(max_size=12) | st.sampled_from(["@someone:test.local", "@x:elsewhere.test",
                                                    "#a:test.local", "!r:test.local", "%", "_"])
other_structured = (
    st.fixed_dictionaries({"auth": st.just({"type": "m.login.dummy"})}, optional={  # register
        "username": odd_text | json_values, "password": odd_text | json_values,
        "device_id": odd_text | json_values, "initial_device_display_name": odd_text | json_values,
        "inhibit_login": json_values})
    | st.fixed_dictionaries({"type": st.just("m.login.password")}, optional={  # login
        "identifier": st.fixed_dictionaries({"type": st.just("m.id.user"), "user": odd_text})
        | json_values,
        "user": odd_text | json_values, "password": odd_text | json_values,
        "device_id": odd_text | json_values})
    | st.fixed_dictionaries({"search_term": odd_text}, optional={"limit": json_values})
    | st.fixed_dictionaries({"user_id": odd_text}, optional={"reason": odd_text | json_values})
    | st.fixed_dictionaries({}, optional={  # publicRooms
        "limit": json_values | st.integers(-5, 1000), "since": odd_text | json_values,
        "filter": st.fixed_dictionaries({}, optional={"generic_search_term": odd_text})
        | json_values})
)
json_bodies = (st.dictionaries(st.sampled_from(FIELD_NAMES), json_values, max_size=6) | json_values
               | structured | other_structured)

ENDPOINTS = ["register", "createRoom", "send", "state", "login", "user_directory", "publicRooms",
             "redact", "invite", "join"]


@pytest.fixture(scope="module")
def fuzz_ctx(server, a, room_id):
    with open(server.data_dir / "server.log", "rb") as f:
        f.seek(0, 2)
        log_offset = f.tell()
    return {"a": a, "room": room_id, "log_offset": log_offset, "server": server}


def _fuzz_request(ctx, endpoint: str, path_part: str, raw: bytes):
    a = ctx["a"]
    room = _q(ctx["room"])
    part = _q(path_part) or "x"
    paths = {
        "register": ("POST", f"{V3}/register"),
        "createRoom": ("POST", f"{V3}/createRoom"),
        "send": ("PUT", f"{V3}/rooms/{room}/send/{part}/{fresh('f')}"),
        "state": ("PUT", f"{V3}/rooms/{room}/state/{part}/{part}"),
        "login": ("POST", f"{V3}/login"),
        "user_directory": ("POST", f"{V3}/user_directory/search"),
        "publicRooms": ("POST", f"{V3}/publicRooms"),
        "redact": ("PUT", f"{V3}/rooms/{room}/redact/{part}/{fresh('f')}"),
        "invite": ("POST", f"{V3}/rooms/{room}/invite"),
        "join": ("POST", f"{V3}/join/{part}"),
    }
    method, path = paths[endpoint]
    status, body = a.request(method, path, raw=raw)
    assert status < 500, (endpoint, path, raw[:300], body)
    if status == 401 and isinstance(body, dict) and "flows" in body:
        return status  # a user-interactive auth challenge: no errcode on the first one
    if status >= 400:
        assert isinstance(body, dict) and isinstance(body.get("errcode"), str), (endpoint, body)
    return status


FUZZ = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@FUZZ
@given(endpoint=st.sampled_from(ENDPOINTS), body=json_bodies, path_part=st.text(max_size=12))
def test_fuzz_json_bodies_never_500(fuzz_ctx, endpoint, body, path_part):
    _fuzz_request(fuzz_ctx, endpoint, path_part,
                  json.dumps(body, ensure_ascii=bool(len(path_part) % 2)).encode("utf-8", "surrogatepass"))


@FUZZ
@given(endpoint=st.sampled_from(ENDPOINTS), raw=st.binary(max_size=200), path_part=st.text(max_size=12))
def test_fuzz_random_bytes_never_500(fuzz_ctx, endpoint, raw, path_part):
    _fuzz_request(fuzz_ctx, endpoint, path_part, raw)


def test_fuzz_left_no_unhandled_errors(fuzz_ctx):
    with open(fuzz_ctx["server"].data_dir / "server.log", "rb") as f:
        f.seek(fuzz_ctx["log_offset"])
        log = f.read().decode("utf-8", "replace")
    bad = [line for line in log.splitlines()
           if "unhandled error" in line.lower() or "Traceback" in line]
    assert not bad, "\n".join(bad[:20])
