"""The audit log (admin actions, logins, failed logins, deactivations, tenant changes,
room deletions, purges: who, what, when, from where), read and exported through the
admin API with tenant scoping; and the logs of a whole scripted run in the JSON format:
one access line per request with its route template, request ids that match the
response header and tag the lines logged while serving it, and not one token or
password anywhere in the log."""
from __future__ import annotations

import json
import time
import urllib.request

import pytest

from tests.server_harness import Http
from tests.tenant_world import V3, create_room, running_world

SERVER = "test.local"
A1, A2 = "/_synapse/admin/v1", "/_synapse/admin/v2"
OURS = "/_homeserver/admin/v1"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    extra = "log_format: json\nregistration:\n  bcrypt_rounds: 4\n  shared_secret: reg-secret-xyz\n"
    with running_world(tmp_path_factory.mktemp("audit"), extra_config=extra) as w:
        secrets = {"adm-pw", "secret-pw", "reg-secret-xyz", w.admin.token}
        alice = w.user("alice", "acme")
        bob = w.user("bob", "globex")
        tadmin = w.user("tadmin", "acme")
        secrets |= {alice.token, bob.token, tadmin.token}
        assert w.admin.request("PUT", f"{OURS}/users/{tadmin.user_id}/admin_tenant", {"admin_tenant": "acme"})[0] == 200
        yield w, alice, bob, tadmin, secrets


def _raw(url: str, token: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}", **(headers or {})})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, dict(r.headers), r.read()


def test_scripted_run_is_audited_and_logged_without_secrets(world):
    w, alice, bob, tadmin, secrets = world
    base = w.srv.base_url
    anon = Http(base)
    # A failed and a good login, from a known user agent.
    wrong = "wrong-password-987"
    secrets.add(wrong)
    assert anon.request("POST", f"{V3}/login", {"type": "m.login.password", "user": "alice", "password": wrong},
                        headers={"User-Agent": "AuditTest/1"})[0] == 403
    status, login = anon.request("POST", f"{V3}/login", {"type": "m.login.password", "user": "alice",
                                                         "password": "secret-pw"}, headers={"User-Agent": "AuditTest/1"})
    assert status == 200
    secrets.add(login["access_token"])
    # A token in the query string must not reach the log either.
    query_token_status, _ = anon.request("GET", f"{V3}/account/whoami?access_token={login['access_token']}")
    assert query_token_status == 200
    # Admin actions of every kind.
    status, created = w.admin.request("PUT", f"{A2}/users/@zed:{SERVER}", {"password": "zed-password-1"})
    secrets.add("zed-password-1")
    assert status == 201
    assert w.admin.request("PUT", f"{OURS}/users/@zed:{SERVER}/tenant", {"tenant_id": "acme"})[0] == 200
    _, puppet = w.admin.request("POST", f"{A1}/users/@zed:{SERVER}/login", {})
    secrets.add(puppet["access_token"])
    room = create_room(alice)
    _, sent = alice.request("PUT", f"{V3}/rooms/{room}/send/m.room.message/x1", {"msgtype": "m.text", "body": "x"})
    assert w.admin.request("POST", f"{A1}/purge_history/{room}/{sent['event_id']}", {})[0] == 200
    assert w.admin.request("DELETE", f"{A2}/rooms/{room}", {"purge": True})[0] == 200
    assert w.admin.request("POST", f"{A1}/deactivate/@zed:{SERVER}", {"erase": False})[0] == 200
    # Shared-secret registration: its password must not be logged.
    import hashlib
    import hmac
    _, nonce = anon.request("GET", f"{A1}/register")
    mac = hmac.new(b"reg-secret-xyz", f"{nonce['nonce']}\x00scripted\x00scripted-pw-42\x00notadmin".encode(),
                   hashlib.sha1).hexdigest()
    status, reg = anon.request("POST", f"{A1}/register", {"nonce": nonce["nonce"], "username": "scripted",
                                                          "password": "scripted-pw-42", "mac": mac})
    assert status == 200
    secrets |= {"scripted-pw-42", reg["access_token"], nonce["nonce"], mac}

    # The audit log, through the API.
    def entries(who: Http, query: str = "") -> list[dict]:
        status, body = who.request("GET", f"{OURS}/audit?limit=1000{query}")
        assert status == 200, body
        return body["entries"]

    time.sleep(0.5)  # the room deletion finishes in the background
    everything = entries(w.admin)
    actions = [e["action"] for e in everything]
    for action in ("login.failed", "login", "user.create", "user.set_tenant", "user.login_as", "room.purge_history",
                   "room.delete", "delete_room.complete", "user.deactivate", "register.shared_secret"):
        assert action in actions, (action, actions)
    failed = next(e for e in everything if e["action"] == "login.failed")
    assert failed["target_user"] == alice.user_id and failed["actor"] is None
    assert failed["ip"] == "127.0.0.1" and failed["user_agent"] == "AuditTest/1" and failed["ts"] > 0
    assert failed["tenant_id"] == "acme"
    deletion = next(e for e in everything if e["action"] == "room.delete")
    assert deletion["actor"] == f"@admin:{SERVER}" and deletion["target_room"] == room
    assert [e["id"] for e in everything] == sorted((e["id"] for e in everything), reverse=True)
    assert [e["action"] for e in entries(w.admin, "&action=login.failed")] == ["login.failed"]
    # Paging.
    _, page1 = w.admin.request("GET", f"{OURS}/audit?limit=3")
    _, page2 = w.admin.request("GET", f"{OURS}/audit?limit=3&from={page1['next_token']}")
    assert [e["id"] for e in page1["entries"] + page2["entries"]] == [e["id"] for e in everything[:6]]
    # Tenant admins read their tenant's entries only.
    theirs = entries(tadmin)
    assert theirs and all(e["tenant_id"] == "acme" for e in theirs)
    assert alice.request("GET", f"{OURS}/audit")[0] == 403
    # Export: JSON lines, oldest first, every entry.
    status, headers, raw = _raw(base + f"{OURS}/audit/export", w.admin.token)
    assert status == 200 and headers["Content-Type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in raw.decode().splitlines()]
    assert [e["id"] for e in lines][:len(everything)] == sorted(e["id"] for e in everything)

    # Request ids: in the response header, on the access line and on lines logged meanwhile.
    status, headers, _ = _raw(base + f"{A2}/users/@zed:{SERVER}", w.admin.token)
    rid = headers["X-Request-Id"]
    log = (w.srv.data_dir / "server.log").read_text()
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    access = [r for r in records if r["logger"] == "homeserver.access"]
    mine = [r for r in access if r["request_id"] == rid]
    assert len(mine) == 1 and mine[0]["route"] == "/_synapse/admin/v2/users/{user_id}"
    assert mine[0]["method"] == "GET" and mine[0]["status"] == 200 and mine[0]["user"] == f"@admin:{SERVER}"
    assert mine[0]["ip"] == "127.0.0.1" and mine[0]["duration_ms"] >= 0
    login_line = next(r for r in access if r["path"] == "/_matrix/client/v3/login" and r["status"] == 403)
    audit_line = next(r for r in records if r["msg"].startswith("audit: login.failed"))
    assert audit_line["request_id"] == login_line["request_id"] != "-"
    whoami = [r for r in access if r["path"].startswith("/_matrix/client/v3/account/whoami")]
    assert whoami and all("access_token" not in r["path"] for r in whoami)
    # Not one token or password of this run is in the log.
    assert len(log) > 1000
    for secret in secrets:
        assert secret not in log, f"a secret ({secret[:4]}...) was logged"
