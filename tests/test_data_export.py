"""Data export through our admin API: a room's whole history and a user's data (what a
GDPR access request asks for), streamed as JSON lines (chunked, page by page), complete
and in stream order; no secrets; tenant admins export only their tenant's."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import pytest

from tests.tenant_world import V3, create_room, running_world

OURS = "/_homeserver/admin/v1"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with running_world(tmp_path_factory.mktemp("export")) as w:
        alice, carol = w.user("alice", "acme"), w.user("carol", "acme")
        bob, tadmin = w.user("bob", "globex"), w.user("tadmin", "acme")
        assert w.admin.request("PUT", f"{OURS}/users/{tadmin.user_id}/admin_tenant", {"admin_tenant": "acme"})[0] == 200
        room = create_room(alice, preset="public_chat", name="Big room")
        assert carol.request("POST", f"{V3}/rooms/{room}/join", {})[0] == 200

        def send(i: int) -> str:
            who = alice if i % 3 else carol
            status, body = who.request("PUT", f"{V3}/rooms/{room}/send/m.room.message/e{i}",
                                       {"msgtype": "m.text", "body": f"message {i}"})
            assert status == 200
            return body["event_id"]
        with ThreadPoolExecutor(8) as pool:
            sent = list(pool.map(send, range(1100)))
        assert alice.request("PUT", f"{V3}/rooms/{room}/redact/{sent[5]}/red1", {})[0] == 200
        alice.request("PUT", f"{V3}/user/{alice.user_id}/account_data/org.example.settings", {"theme": "dark"})
        yield w, alice, carol, bob, tadmin, room, sent


def _stream(url: str, token: str) -> tuple[int, dict, list[dict]]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, dict(r.headers), [json.loads(line) for line in r.read().decode().splitlines()]
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), [json.loads(e.read())]


def _sql(w, query: str, args: tuple) -> list[tuple]:
    with psycopg2.connect(w.srv.dsn()) as conn, conn.cursor() as cur:
        cur.execute(query, args)
        return cur.fetchall()


def test_room_export_is_complete_and_streamed(world):
    w, alice, carol, bob, tadmin, room, sent = world
    status, headers, lines = _stream(w.srv.base_url + f"{OURS}/rooms/{room}/export", w.admin.token)
    assert status == 200 and headers.get("Transfer-Encoding") == "chunked" and "Content-Length" not in headers
    assert headers["Content-Type"].startswith("application/x-ndjson")
    assert lines[0]["kind"] == "room" and lines[0]["room_id"] == room and lines[0]["tenant_id"] == "acme"
    events = [line["event"] for line in lines[1:]]
    assert all(line["kind"] == "event" for line in lines[1:])
    expected = [r[0] for r in _sql(w, "SELECT event_id FROM events WHERE room_id = %s ORDER BY stream_ordering",
                                   (room,))]
    assert [e["event_id"] for e in events] == expected and len(expected) > 1100
    redacted = next(e for e in events if e["event_id"] == sent[5])
    assert redacted["content"] == {} and "redacted_because" in redacted["unsigned"]
    assert next(e for e in events if e["event_id"] == sent[6])["content"]["body"] == "message 6"


def test_user_export_holds_the_users_data_only(world):
    w, alice, carol, bob, tadmin, room, sent = world
    status, _, lines = _stream(w.srv.base_url + f"{OURS}/users/{alice.user_id}/export", w.admin.token)
    assert status == 200
    kinds = [line["kind"] for line in lines]
    profile = lines[0]
    assert profile["kind"] == "profile" and profile["user_id"] == alice.user_id and profile["tenant_id"] == "acme"
    assert "password_hash" not in profile
    devices = [line for line in lines if line["kind"] == "device"]
    assert devices and all(set(d) <= {"kind", "device_id", "display_name", "last_seen_ts", "last_seen_ip",
                                      "last_seen_user_agent"} for d in devices)
    assert {"kind": "account_data", "room_id": None, "type": "org.example.settings", "content": {"theme": "dark"}} \
        in lines
    assert {"kind": "membership", "room_id": room, "membership": "join"} in lines
    events = [line["event"] for line in lines if line["kind"] == "event"]
    assert events and all(e["sender"] == alice.user_id for e in events)
    expected = _sql(w, "SELECT count(*) FROM events WHERE sender = %s", (alice.user_id,))[0][0]
    assert len(events) == expected
    assert kinds.index("event") > kinds.index("membership")
    log = (w.srv.data_dir / "server.log").read_text()
    assert alice.token not in json.dumps(lines) and alice.token not in log


def test_export_is_for_admins_within_their_tenant(world):
    w, alice, carol, bob, tadmin, room, sent = world
    assert _stream(w.srv.base_url + f"{OURS}/rooms/{room}/export", alice.token)[0] == 403
    status, _, lines = _stream(w.srv.base_url + f"{OURS}/users/{carol.user_id}/export", tadmin.token)
    assert status == 200 and lines[0]["user_id"] == carol.user_id
    missing_user = _stream(w.srv.base_url + f"{OURS}/users/@nobody:test.local/export", tadmin.token)
    assert missing_user[0] == 404
    assert _stream(w.srv.base_url + f"{OURS}/users/{bob.user_id}/export", tadmin.token)[2] == missing_user[2]
    bob_room = create_room(bob)
    missing_room = _stream(w.srv.base_url + f"{OURS}/rooms/!nope:test.local/export", tadmin.token)
    assert missing_room[0] == 404
    assert _stream(w.srv.base_url + f"{OURS}/rooms/{bob_room}/export", tadmin.token)[2] == missing_room[2]
