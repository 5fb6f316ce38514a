"""User-interactive authentication sessions over real HTTP: registration continued with
only `auth` registers the user the first request asked for, completing a session twice
is idempotent, sessions are bound to one operation and one user, every 401 lists
`completed`, authenticating as someone else is 403, and sessions expire."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import psycopg2

from client_api.uia import SESSION_LIFETIME_MS
from tests.server_harness import Http, new_user

V3 = "/_matrix/client/v3"
PASSWORD = "secret-pw"


def _user(server, unique, prefix: str = "u") -> Http:
    return new_user(server.base_url, unique(prefix))


def _password_auth(session: str | None, user: str, password: str = PASSWORD) -> dict:
    auth = {"type": "m.login.password", "password": password,
            "identifier": {"type": "m.id.user", "user": user}}
    if session:
        auth["session"] = session
    return auth


def _challenge(http: Http, method: str, path: str, body: dict) -> str:
    status, resp = http.request(method, path, body)
    assert status == 401, resp
    assert resp["completed"] == [] and resp["session"], resp
    return resp["session"]


def test_registration_continues_with_only_the_session(http, unique):
    name = unique("reg")
    status, resp = http.request("POST", f"{V3}/register", {
        "username": name, "password": "first-pw", "initial_device_display_name": "Phone"})
    assert status == 401, resp
    assert {"stages": ["m.login.dummy"]} in resp["flows"]
    assert resp["completed"] == []
    session = resp["session"]

    # Only auth, plus a parameter the first request did not set: the rest is remembered.
    status, done = http.request("POST", f"{V3}/register",
                                {"auth": {"type": "m.login.dummy", "session": session},
                                 "inhibit_login": False})
    assert status == 200, done
    assert done["user_id"] == f"@{name}:test.local"
    # The first request's password and device name were kept with the session.
    status, login = http.request("POST", f"{V3}/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": name},
        "password": "first-pw"})
    assert status == 200, login
    status, device = Http(http.base_url, done["access_token"]).request(
        "GET", f"{V3}/devices/{done['device_id']}")
    assert device["display_name"] == "Phone"


def test_completing_a_registration_twice_returns_the_same_user(http, unique):
    name = unique("idem")
    session = _challenge(http, "POST", f"{V3}/register",
                         {"username": name, "password": "pw", "inhibit_login": True})
    again = {"auth": {"type": "m.login.dummy", "session": session}}
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: http.request("POST", f"{V3}/register", again), range(4)))
    answers.append(http.request("POST", f"{V3}/register", again))
    for status, body in answers:
        assert status == 200, body
        assert body == {"user_id": f"@{name}:test.local", "home_server": "test.local"}  # no login


def test_registration_without_username_keeps_its_generated_user(http, unique):
    session = _challenge(http, "POST", f"{V3}/register", {"password": "pw"})
    auth = {"auth": {"type": "m.login.dummy", "session": session}}
    first = http.request("POST", f"{V3}/register", auth)
    second = http.request("POST", f"{V3}/register", auth)
    assert first[0] == second[0] == 200
    assert first[1]["user_id"] == second[1]["user_id"]
    assert first[1]["access_token"] != second[1]["access_token"]  # a fresh login each time


def test_session_is_bound_to_its_operation(server, unique):
    alice = _user(server, unique, "alice")
    status, login = Http(server.base_url).request("POST", f"{V3}/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": alice.user_id},
        "password": PASSWORD})
    other_device = login["device_id"]
    # A session started to delete this device...
    session = _challenge(alice, "DELETE", f"{V3}/devices/{alice.device_id}", {})
    # ...cannot delete another one, even with the right password.
    status, resp = alice.request("DELETE", f"{V3}/devices/{other_device}",
                                 {"auth": _password_auth(session, alice.user_id)})
    assert (status, resp["errcode"]) == (403, "M_FORBIDDEN"), resp
    assert alice.request("GET", f"{V3}/devices/{other_device}")[0] == 200
    # Nor change the password.
    status, resp = alice.request("POST", f"{V3}/account/password", {
        "new_password": "stolen", "auth": _password_auth(session, alice.user_id)})
    assert status == 403, resp

    # A bulk delete's session names its devices.
    session = _challenge(alice, "POST", f"{V3}/delete_devices", {"devices": ["NOSUCH"]})
    status, resp = alice.request("POST", f"{V3}/delete_devices", {
        "devices": [other_device], "auth": _password_auth(session, alice.user_id)})
    assert status == 403, resp
    assert alice.request("GET", f"{V3}/devices/{other_device}")[0] == 200

    # A registration session is no password change either.
    anon = Http(server.base_url)
    reg_session = _challenge(anon, "POST", f"{V3}/register", {"username": unique("r")})
    status, resp = alice.request("POST", f"{V3}/account/password", {
        "new_password": "x", "auth": _password_auth(reg_session, alice.user_id)})
    assert status == 403, resp

    # The operation it was started for goes through.
    session = _challenge(alice, "DELETE", f"{V3}/devices/{other_device}", {})
    status, resp = alice.request("DELETE", f"{V3}/devices/{other_device}",
                                 {"auth": _password_auth(session, alice.user_id)})
    assert (status, resp) == (200, {})
    assert alice.request("GET", f"{V3}/devices/{other_device}")[0] == 404


def test_session_is_bound_to_its_user(server, unique):
    alice, bob = _user(server, unique, "alice"), _user(server, unique, "bob")
    session = _challenge(alice, "DELETE", f"{V3}/devices/SAME", {})
    status, resp = bob.request("DELETE", f"{V3}/devices/SAME",
                               {"auth": _password_auth(session, bob.user_id)})
    assert (status, resp["errcode"]) == (403, "M_FORBIDDEN"), resp


def test_authenticating_as_another_user_is_forbidden(server, unique):
    alice, bob = _user(server, unique, "alice"), _user(server, unique, "bob")
    session = _challenge(alice, "DELETE", f"{V3}/devices/{alice.device_id}", {})
    # Bob's own (right) password, claimed by alice's client: not alice's re-authentication.
    status, resp = alice.request("DELETE", f"{V3}/devices/{alice.device_id}",
                                 {"auth": _password_auth(session, bob.user_id)})
    assert (status, resp["errcode"]) == (403, "M_FORBIDDEN"), resp
    assert alice.request("GET", f"{V3}/account/whoami")[0] == 200  # device still there


def test_every_401_lists_completed(server, unique):
    alice = _user(server, unique, "alice")
    path = f"{V3}/devices/{alice.device_id}"
    session = _challenge(alice, "DELETE", path, {})
    status, resp = alice.request("DELETE", path, {"auth": _password_auth(session, alice.user_id, "wrong")})
    assert status == 401, resp
    assert (resp["errcode"], resp["completed"], resp["session"]) == ("M_FORBIDDEN", [], session)
    assert {"stages": ["m.login.password"]} in resp["flows"]
    # A stage the flow does not offer is not completed by sending it.
    status, resp = alice.request("DELETE", path, {"auth": {"type": "m.login.dummy", "session": session}})
    assert status == 401 and resp["completed"] == [], resp
    status, resp = alice.request("DELETE", path, {"auth": _password_auth(session, alice.user_id)})
    assert (status, resp) == (200, {})


def test_unknown_and_expired_sessions_are_refused(server, unique):
    alice = _user(server, unique, "alice")
    path = f"{V3}/devices/{alice.device_id}"
    status, resp = alice.request("DELETE", path, {"auth": _password_auth("nonsense", alice.user_id)})
    assert status == 400, resp
    session = _challenge(alice, "DELETE", path, {})
    conn = psycopg2.connect(server.dsn())
    try:
        with conn, conn.cursor() as cur:
            cur.execute("UPDATE uia_sessions SET created_ts = created_ts - %s WHERE session_id = %s",
                        (SESSION_LIFETIME_MS + 1000, session))
            assert cur.rowcount == 1
    finally:
        conn.close()
    status, resp = alice.request("DELETE", path, {"auth": _password_auth(session, alice.user_id)})
    assert status == 400, resp
    assert alice.request("GET", f"{V3}/account/whoami")[0] == 200


def test_completed_stage_is_remembered_by_the_session(server, unique):
    """A session whose stage is complete finishes its operation when the client retries
    (for example after a lost response), without the password again."""
    alice = _user(server, unique, "alice")
    name = unique("dev")
    status, login = Http(server.base_url).request("POST", f"{V3}/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": alice.user_id},
        "password": PASSWORD, "device_id": name})
    path = f"{V3}/devices/{quote(name)}"
    session = _challenge(alice, "DELETE", path, {})
    assert alice.request("DELETE", path, {"auth": _password_auth(session, alice.user_id)})[0] == 200
    status, resp = alice.request("DELETE", path, {"auth": {"session": session}})
    assert (status, resp) == (200, {})
