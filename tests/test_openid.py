"""OpenID tokens for widgets: requested by a user for themselves, verified by a third
party through the federation userinfo endpoint (served on the client port), random,
stored hashed, and expiring."""
from __future__ import annotations

import hashlib
import time
import urllib.parse

import psycopg2
import pytest

from tests.server_harness import Http, ServerProcess

V3 = "/_matrix/client/v3"
USERINFO = "/_matrix/federation/v1/openid/userinfo"
LIFETIME_MS = 2000


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = ServerProcess(tmp_path_factory.mktemp("openid"), extra_config=f"openid:\n  token_lifetime_ms: {LIFETIME_MS}\n")
    s.start()
    yield s
    s.stop()
    s.stop_postgres()


def _user(srv: ServerProcess, name: str) -> tuple[Http, dict]:
    http = Http(srv.base_url)
    me = http.register(name)
    http.token = me["access_token"]
    return http, me


def _userinfo(srv: ServerProcess, token: str) -> tuple[int, dict]:
    return Http(srv.base_url).request("GET", f"{USERINFO}?access_token={urllib.parse.quote(token)}")


def _request(http: Http, user_id: str) -> tuple[int, dict]:
    return http.request("POST", f"{V3}/user/{urllib.parse.quote(user_id)}/openid/request_token", {})


def test_token_identifies_its_user_and_is_stored_hashed(srv):
    http, me = _user(srv, "widgetuser")
    status, body = _request(http, me["user_id"])
    assert status == 200, body
    assert body["token_type"] == "Bearer" and body["matrix_server_name"] == "test.local"
    assert body["expires_in"] == LIFETIME_MS // 1000
    token = body["access_token"]
    assert len(token) >= 32
    assert _userinfo(srv, token) == (200, {"sub": me["user_id"]})
    # Each request gives a fresh random token.
    assert _request(http, me["user_id"])[1]["access_token"] != token
    # Only the hash is stored.
    conn = psycopg2.connect(srv.dsn())
    with conn, conn.cursor() as cur:
        cur.execute("SELECT token_hash FROM openid_tokens WHERE user_id = %s", (me["user_id"],))
        hashes = [bytes(r[0]) for r in cur.fetchall()]
    conn.close()
    assert hashlib.sha256(token.encode()).digest() in hashes
    # It is not an access token for the client API.
    assert Http(srv.base_url, token).request("GET", f"{V3}/account/whoami")[1]["errcode"] == "M_UNKNOWN_TOKEN"


def test_only_for_yourself_and_only_with_a_token(srv):
    http, me = _user(srv, "askself")
    _, other = _user(srv, "someoneelse")
    status, body = _request(http, other["user_id"])
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    # a user that does not exist gets the same answer
    assert _request(http, "@ghost-nobody:test.local") == (status, body)
    status, body = _request(Http(srv.base_url), me["user_id"])
    assert status == 401 and body["errcode"] == "M_MISSING_TOKEN"
    status, body = http.request("POST", f"{V3}/user/{me['user_id']}/openid/request_token", raw=b"{nope")
    assert status == 400 and body["errcode"] == "M_NOT_JSON"


def test_bad_missing_and_expired_tokens_are_refused(srv):
    http, me = _user(srv, "expiring")
    status, body = _userinfo(srv, "not-a-token")
    assert status == 401 and body["errcode"] == "M_UNKNOWN_TOKEN"
    status, body = Http(srv.base_url).request("GET", USERINFO)
    assert status == 400 and body["errcode"] == "M_MISSING_PARAM"
    # An access token is not an OpenID token.
    assert _userinfo(srv, http.token)[0] == 401
    token = _request(http, me["user_id"])[1]["access_token"]
    assert _userinfo(srv, token)[0] == 200
    time.sleep(LIFETIME_MS / 1000 + 0.5)
    status, body = _userinfo(srv, token)
    assert status == 401 and body["errcode"] == "M_UNKNOWN_TOKEN"
