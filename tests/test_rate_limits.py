"""Rate limits, each test server with small limits in its own config: a burst from one
user gets 429 M_LIMIT_EXCEEDED with retry_after_ms and Retry-After, and matrix-nio's own
retry loop gets every message through in the end; joins, invites, logins and
registrations have their buckets; application services with `rate_limited: false`,
server admins and users with an admin override are exempt."""
from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import yaml
from nio import AsyncClient, AsyncClientConfig, RoomSendResponse

from tests.server_harness import REPO, Http, ServerProcess

V3 = "/_matrix/client/v3"
LIMITS = ("rc_message: {per_second: 4, burst_count: 3}\n"
          "rc_joins:\n  local: {per_second: 0.05, burst_count: 2}\n  remote: {per_second: 0.01, burst_count: 1}\n"
          "rc_invites:\n  per_room: {per_second: 100, burst_count: 100}\n"
          "  per_user: {per_second: 0.05, burst_count: 2}\n  per_issuer: {per_second: 100, burst_count: 100}\n")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("rl")
    reg = {"id": "limited-bridge", "url": None, "as_token": secrets.token_hex(16), "hs_token": secrets.token_hex(16),
           "sender_localpart": "_free_bot", "rate_limited": False,
           "namespaces": {"users": [{"exclusive": True, "regex": "@_free_.*"}], "aliases": [], "rooms": []}}
    limited = dict(reg, id="limited", as_token=secrets.token_hex(16), hs_token=secrets.token_hex(16),
                   sender_localpart="_lim_bot", rate_limited=True,
                   namespaces={"users": [{"exclusive": True, "regex": "@_lim_.*"}], "aliases": [], "rooms": []})
    (d / "free.yaml").write_text(yaml.safe_dump(reg))
    (d / "lim.yaml").write_text(yaml.safe_dump(limited))
    srv = ServerProcess(d / "hs", extra_config=LIMITS + f"app_service_config_files: [{d / 'free.yaml'}, {d / 'lim.yaml'}]\n")
    srv.write_config()
    subprocess.run([sys.executable, "-m", "homeserver.cli", "register-user", "admin", "--password", "adm-pw",
                    "--admin", "--config", str(srv.config_path)], cwd=REPO, check=True, capture_output=True)
    srv.start()
    _, login = Http(srv.base_url).request("POST", f"{V3}/login", {"type": "m.login.password", "user": "admin",
                                                                  "password": "adm-pw"})
    admin = Http(srv.base_url, login["access_token"])
    admin.user_id = login["user_id"]
    yield srv, admin, reg, limited
    srv.stop()
    srv.stop_postgres()


def _user(srv, unique) -> Http:
    reg = Http(srv.base_url).register(unique("rl"))
    h = Http(srv.base_url, reg["access_token"])
    h.user_id = reg["user_id"]
    h.name = reg["user_id"][1:].split(":")[0]
    return h


def _room(h: Http) -> str:
    status, body = h.request("POST", f"{V3}/createRoom", {"preset": "public_chat"})
    assert status == 200, body
    return body["room_id"]


def _raw_send(base: str, token: str, room: str, txn: str) -> tuple[int, dict, dict]:
    req = urllib.request.Request(f"{base}{V3}/rooms/{room}/send/m.room.message/{txn}", method="PUT",
                                 data=json.dumps({"msgtype": "m.text", "body": txn}).encode(),
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def _burst(srv, token: str, room: str, n: int, prefix: str) -> list[tuple[int, dict, dict]]:
    return [_raw_send(srv.base_url, token, room, f"{prefix}{i}") for i in range(n)]


def test_burst_gets_429_with_retry_after(env, unique):
    srv, _, _, _ = env
    u = _user(srv, unique)
    room = _room(u)
    results = _burst(srv, u.token, room, 10, "b")
    codes = [r[0] for r in results]
    assert codes[:3] == [200, 200, 200] and 429 in codes
    status, headers, body = next(r for r in results if r[0] == 429)
    assert body["errcode"] == "M_LIMIT_EXCEEDED"
    assert isinstance(body["retry_after_ms"], int) and 0 < body["retry_after_ms"] <= 1000
    assert int(headers["Retry-After"]) >= 1 and int(headers["Retry-After"]) * 1000 >= body["retry_after_ms"]
    time.sleep(body["retry_after_ms"] / 1000 + 0.05)
    assert _raw_send(srv.base_url, u.token, room, "after-wait")[0] == 200
    # Another user has a bucket of their own.
    v = _user(srv, unique)
    assert v.request("POST", f"{V3}/rooms/{room}/join", {})[0] == 200
    assert _raw_send(srv.base_url, v.token, room, "v0")[0] == 200


def test_nio_retries_until_every_message_is_through(env, unique):
    srv, _, _, _ = env
    u = _user(srv, unique)
    room = _room(u)

    async def main() -> list:
        client = AsyncClient(srv.base_url, u.user_id, config=AsyncClientConfig(max_limit_exceeded=None))
        client.access_token, client.user_id = u.token, u.user_id
        try:
            out = []
            for i in range(12):  # 3 at once, then 4 per second: nio waits retry_after_ms
                out.append(await client.room_send(room, "m.room.message", {"msgtype": "m.text", "body": f"n{i}"}))
            return out
        finally:
            await client.close()

    started = time.monotonic()
    responses = asyncio.run(main())
    assert all(isinstance(r, RoomSendResponse) for r in responses), responses
    assert time.monotonic() - started >= 2.0  # it really was held back
    _, page = u.request("GET", f"{V3}/rooms/{room}/messages?dir=b&limit=50")
    bodies = [e["content"]["body"] for e in reversed(page["chunk"]) if e["type"] == "m.room.message"]
    assert bodies == [f"n{i}" for i in range(12)]  # each once, in order


def test_joins_and_invites_have_buckets(env, unique):
    srv, _, _, _ = env
    owner = _user(srv, unique)
    rooms = [_room(owner) for _ in range(3)]
    joiner = _user(srv, unique)
    assert [joiner.request("POST", f"{V3}/join/{r}", {})[0] for r in rooms] == [200, 200, 429]
    # rc_invites.per_user: invites received by one user, whoever sends them.
    invitee = _user(srv, unique)
    codes = [owner.request("POST", f"{V3}/rooms/{r}/invite", {"user_id": invitee.user_id})[0] for r in rooms]
    assert codes == [200, 200, 429]


def test_admins_services_and_overrides_are_exempt(env, unique):
    srv, admin, free, limited = env
    room = _room(admin)
    assert all(r[0] == 200 for r in _burst(srv, admin.token, room, 8, "adm"))
    # An application service registered with rate_limited: false, and the users it acts as.
    free_http = Http(srv.base_url, free["as_token"])
    status, body = free_http.request("POST", f"{V3}/register", {"type": "m.login.application_service",
                                                                 "username": "_free_ghost"})
    assert status == 200, body
    fr = free_http.request("POST", f"{V3}/createRoom", {"preset": "public_chat"})[1]["room_id"]
    assert all(r[0] == 200 for r in _burst(srv, free["as_token"], fr, 8, "as"))
    as_ghost = "?user_id=@_free_ghost:test.local"
    assert free_http.request("POST", f"{V3}/rooms/{fr}/join{as_ghost}", {})[0] == 200
    codes = [free_http.request("PUT", f"{V3}/rooms/{fr}/send/m.room.message/g{i}{as_ghost}",
                               {"msgtype": "m.text", "body": "g"})[0] for i in range(8)]
    assert codes == [200] * 8
    # A service that did not opt out is limited like anyone.
    lim = limited["as_token"]
    lr = Http(srv.base_url, lim).request("POST", f"{V3}/createRoom", {})[1]["room_id"]
    assert 429 in [r[0] for r in _burst(srv, lim, lr, 8, "lim")]
    # The admin API: a user's own rate, 0/0 for none.
    u = _user(srv, unique)
    path = f"/_homeserver/admin/v1/users/{u.user_id}/ratelimit"
    assert admin.request("GET", path) == (200, {})
    assert admin.request("PUT", path, {"messages_per_second": 0, "burst_count": 0}) == (
        200, {"messages_per_second": 0, "burst_count": 0})
    assert admin.request("GET", path)[1] == {"messages_per_second": 0, "burst_count": 0}
    ur = _room(u)
    assert all(r[0] == 200 for r in _burst(srv, u.token, ur, 8, "ov"))
    assert admin.request("PUT", path, {"messages_per_second": 1, "burst_count": 20})[0] == 200
    assert all(r[0] == 200 for r in _burst(srv, u.token, ur, 12, "ov2"))  # a bigger burst than rc_message
    assert admin.request("DELETE", path) == (200, {})
    assert admin.request("GET", path) == (200, {})
    time.sleep(1.0)
    assert 429 in [r[0] for r in _burst(srv, u.token, ur, 8, "ov3")]
    for bad in ({"messages_per_second": -1}, {"burst_count": "many"}, {"messages_per_second": True}):
        status, err = admin.request("PUT", path, bad)
        assert status == 400 and err["errcode"] == "M_INVALID_PARAM"
    assert u.request("PUT", path, {"messages_per_second": 0, "burst_count": 0})[0] == 403
    assert admin.request("GET", "/_homeserver/admin/v1/users/@ghost:elsewhere/ratelimit")[0] == 400
    assert admin.request("GET", "/_homeserver/admin/v1/users/@nobody:test.local/ratelimit")[0] == 404


def test_login_and_registration_limits(tmp_path):
    srv = ServerProcess(tmp_path / "hs", extra_config=(
        "rc_registration: {per_second: 0.01, burst_count: 3}\n"
        "rc_login:\n  address: {per_second: 0.01, burst_count: 6}\n"
        "  account: {per_second: 0.01, burst_count: 2}\n  failed_attempts: {per_second: 0.01, burst_count: 2}\n"))
    srv.start()
    try:
        http = Http(srv.base_url)
        for name in ("r1", "r2"):
            http.register(name)
        # Asking for UIA flows is free; the third account is the last one allowed.
        assert http.request("POST", f"{V3}/register", {"username": "r3", "password": "pw"})[0] == 401
        http.register("r3")
        status, body = http.request("POST", f"{V3}/register", {"username": "r4", "password": "pw",
                                                               "auth": {"type": "m.login.dummy"}})
        assert status == 429 and body["errcode"] == "M_LIMIT_EXCEEDED" and body["retry_after_ms"] > 0

        def login(user: str, password: str):
            return http.request("POST", f"{V3}/login", {"type": "m.login.password", "user": user,
                                                        "password": password})
        # Wrong passwords: two are answered 403, then the account is held off even with
        # the right one.
        assert login("r1", "wrong")[0] == 403
        assert login("r1", "wrong")[0] == 403
        status, body = login("r1", "secret-pw")
        assert status == 429 and body["errcode"] == "M_LIMIT_EXCEEDED"
        # Successful logins per account.
        assert login("r2", "secret-pw")[0] == 200
        assert login("r2", "secret-pw")[0] == 200
        assert login("r2", "secret-pw")[0] == 429
        # Every attempt from this address counts: the sixth of this test was the last.
        assert login("r3", "secret-pw")[0] == 429
    finally:
        srv.stop()
        srv.stop_postgres()
