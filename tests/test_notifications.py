"""Unread notification counts in /sync, GET /notifications and the pusher API, over real
HTTP against a real server: counts climb for the other members and reset on read
receipts, mentions highlight, muted rooms stay quiet, threads are counted apart, and
counts of a 200'd event survive a crash."""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse

import pytest

from tests.server_harness import REPO, Http, ServerProcess

V3 = "/_matrix/client/v3"
GATEWAY = "http://127.0.0.1:9/_matrix/push/v1/notify"  # never reached: nobody notified here


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("notif"),
                        extra_config="push:\n  gateway_ip_range_whitelist: ['127.0.0.0/8']\n")
    srv.write_config()
    subprocess.run([sys.executable, "-m", "homeserver.cli", "register-user", "admin", "--password", "adm-pw",
                    "--admin", "--config", str(srv.config_path)], cwd=REPO, check=True, capture_output=True)
    srv.start()
    http = Http(srv.base_url)
    _, login = http.request("POST", f"{V3}/login", {"type": "m.login.password", "user": "admin", "password": "adm-pw"})
    admin = Http(srv.base_url, login["access_token"])
    yield srv, admin
    srv.stop()
    srv.stop_postgres()


def _user(srv, unique, prefix="u") -> Http:
    reg = Http(srv.base_url).register(unique(prefix))
    h = Http(srv.base_url, reg["access_token"])
    h.user_id = reg["user_id"]
    return h


def _pair(srv, unique, **room) -> tuple[Http, Http, str]:
    a, b = _user(srv, unique, "a"), _user(srv, unique, "b")
    status, body = a.request("POST", f"{V3}/createRoom", {"invite": [b.user_id], **room})
    assert status == 200, body
    assert b.request("POST", f"{V3}/rooms/{body['room_id']}/join", {})[0] == 200
    return a, b, body["room_id"]


def _send(h: Http, room: str, body: str = "hi", **content) -> str:
    txn = f"t{abs(hash((body, json.dumps(content), id(h), len(body)))) % 10**12}{h.__dict__.setdefault('n', 0)}"
    h.n += 1
    status, resp = h.request("PUT", f"{V3}/rooms/{room}/send/m.room.message/{txn}",
                             {"msgtype": "m.text", "body": body, **content})
    assert status == 200, resp
    return resp["event_id"]


def _sync(h: Http, since: str | None = None, filt: dict | None = None) -> dict:
    q = {"timeout": "0"}
    if since:
        q["since"] = since
    if filt is not None:
        q["filter"] = json.dumps(filt)
    status, body = h.request("GET", f"{V3}/sync?{urllib.parse.urlencode(q)}")
    assert status == 200, body
    return body


def _counts(sync: dict, room: str) -> tuple[int, int] | None:
    entry = sync["rooms"]["join"].get(room)
    if entry is None:
        return None
    u = entry["unread_notifications"]
    return u["notification_count"], u["highlight_count"]


def test_counts_climb_highlight_and_reset_on_receipt(world, unique):
    srv, _ = world
    a, b, room = _pair(srv, unique, preset="private_chat")
    c = _user(srv, unique, "c")  # three members: plain .m.rule.message, no one-to-one rule
    a.request("POST", f"{V3}/rooms/{room}/invite", {"user_id": c.user_id})
    c.request("POST", f"{V3}/rooms/{room}/join", {})
    first = _sync(b)
    assert _counts(first, room) == (0, 0)  # the invite was read by joining
    _send(a, room, "one")
    _send(a, room, "two")
    s2 = _sync(b, first["next_batch"])
    assert _counts(s2, room) == (2, 0)
    assert _counts(_sync(a), room) == (0, 0)  # the sender is never notified of their own
    mention = _send(a, room, "hey b", **{"m.mentions": {"user_ids": [b.user_id]}})
    s3 = _sync(b, s2["next_batch"])
    assert _counts(s3, room) == (3, 1)
    assert _counts(_sync(c), room) == (3, 0)  # c was not mentioned
    # The receipt alone brings the room into the next incremental sync, even when the
    # client filters receipts out, with the counts at zero.
    status, _ = b.request("POST", f"{V3}/rooms/{room}/receipt/m.read/{mention}", {})
    assert status == 200
    s4 = _sync(b, s3["next_batch"], {"room": {"ephemeral": {"not_types": ["*"]}}})
    assert _counts(s4, room) == (0, 0)
    assert _counts(_sync(c), room) == (3, 0)  # c's counts are c's
    # A private receipt resets too; an older receipt changes nothing.
    later = _send(a, room, "three")
    assert _counts(_sync(b), room) == (1, 0)
    assert b.request("POST", f"{V3}/rooms/{room}/receipt/m.read/{mention}", {})[0] == 200
    assert _counts(_sync(b), room) == (1, 0)
    assert b.request("POST", f"{V3}/rooms/{room}/receipt/m.read.private/{later}", {})[0] == 200
    assert _counts(_sync(b), room) == (0, 0)


def test_one_to_one_and_room_mentions(world, unique):
    srv, _ = world
    a, b, room = _pair(srv, unique)
    _send(a, room, "@room look", **{"m.mentions": {"room": True}})  # a created the room: PL 100
    assert _counts(_sync(b), room) == (1, 1)
    _send(b, room, "@room from b", **{"m.mentions": {"room": True}})  # b has PL 0 < 50
    assert _counts(_sync(a), room) == (1, 0)


def test_muted_rooms_do_not_count(world, unique):
    srv, _ = world
    a, b, room = _pair(srv, unique, preset="private_chat")
    room2 = b.request("POST", f"{V3}/createRoom", {"invite": [a.user_id]})[1]["room_id"]
    assert a.request("POST", f"{V3}/rooms/{room2}/join", {})[0] == 200
    # Element's "mentions and keywords" for a room: a room-specific rule without notify
    # (here with the legacy dont_notify): messages stay quiet, a mention still counts ...
    status, body = b.request("PUT", f"{V3}/pushrules/global/room/{urllib.parse.quote(room)}",
                             {"actions": ["dont_notify"]})
    assert status == 200, body
    _send(a, room, "quiet")
    _send(a, room, "quiet too")
    assert _counts(_sync(b), room) == (0, 0)
    _send(a, room, "but a mention", **{"m.mentions": {"user_ids": [b.user_id]}})
    assert _counts(_sync(b), room) == (1, 1)
    # ... Element's "mute": an override rule matching the room id silences everything.
    a2, b2, room3 = _pair(srv, unique, preset="private_chat")
    rule = {"conditions": [{"kind": "event_match", "key": "room_id", "pattern": room3}], "actions": []}
    assert b2.request("PUT", f"{V3}/pushrules/global/override/{urllib.parse.quote(room3)}", rule)[0] == 200
    _send(a2, room3, "muted")
    _send(a2, room3, "muted mention", **{"m.mentions": {"user_ids": [b2.user_id]}})
    assert _counts(_sync(b2), room3) == (0, 0)
    # Unmuting: the next message counts again.
    assert b2.request("DELETE", f"{V3}/pushrules/global/override/{urllib.parse.quote(room3)}")[0] == 200
    _send(a2, room3, "loud")
    assert _counts(_sync(b2), room3) == (1, 0)
    # b's rule is for that room only.
    _send(a, room2, "elsewhere")
    assert _counts(_sync(b), room2) == (1, 0)


def test_thread_counts_apart_and_threaded_receipts(world, unique):
    srv, _ = world
    a, b, room = _pair(srv, unique)
    root = _send(a, room, "root")
    thread = {"m.relates_to": {"rel_type": "m.thread", "event_id": root}}
    _send(a, room, "in thread 1", **thread)
    last_in_thread = _send(a, room, "in thread 2", **thread)
    main2 = _send(a, room, "main again")
    threaded = {"room": {"timeline": {"unread_thread_notifications": True}}}
    entry = _sync(b, filt=threaded)["rooms"]["join"][room]
    assert entry["unread_notifications"] == {"notification_count": 2, "highlight_count": 0}
    assert entry["unread_thread_notifications"] == {root: {"notification_count": 2, "highlight_count": 0}}
    # Without asking for threads: everything together.
    assert _counts(_sync(b), room) == (4, 0)
    # A threaded receipt reads its thread only.
    status, _ = b.request("POST", f"{V3}/rooms/{room}/receipt/m.read/{last_in_thread}", {"thread_id": root})
    assert status == 200
    entry = _sync(b, filt=threaded)["rooms"]["join"][room]
    assert entry["unread_notifications"]["notification_count"] == 2
    assert entry["unread_thread_notifications"] == {}
    # "main" reads the main timeline up to its event.
    assert b.request("POST", f"{V3}/rooms/{room}/receipt/m.read/{main2}", {"thread_id": "main"})[0] == 200
    entry = _sync(b, filt=threaded)["rooms"]["join"][room]
    assert entry["unread_notifications"]["notification_count"] == 0
    # An unthreaded receipt reads everything up to its event, threads included.
    _send(a, room, "thread 3", **thread)
    newest = _send(a, room, "main 3")
    assert _counts(_sync(b), room) == (2, 0)
    assert b.request("POST", f"{V3}/rooms/{room}/receipt/m.read/{newest}", {})[0] == 200
    assert _counts(_sync(b), room) == (0, 0)


def test_notifications_endpoint(world, unique):
    srv, _ = world
    a, b, room = _pair(srv, unique)
    first = _send(a, room, "one")
    mention = _send(a, room, "ping", **{"m.mentions": {"user_ids": [b.user_id]}})
    third = _send(a, room, "three")
    assert b.request("POST", f"{V3}/rooms/{room}/receipt/m.read/{first}", {})[0] == 200
    status, body = b.request("GET", f"{V3}/notifications?limit=2")
    assert status == 200, body
    got = body["notifications"]
    assert [n["event"]["event_id"] for n in got] == [third, mention]
    assert [n["read"] for n in got] == [False, False]
    assert got[1]["actions"][-1] == {"set_tweak": "highlight"} and got[1]["room_id"] == room
    assert isinstance(got[0]["ts"], int) and got[0]["event"]["content"]["body"] == "three"
    status, rest = b.request("GET", f"{V3}/notifications?limit=2&from={body['next_token']}")
    assert status == 200 and rest["notifications"][0]["event"]["event_id"] == first
    assert rest["notifications"][0]["read"] is True
    status, hl = b.request("GET", f"{V3}/notifications?only=highlight")
    assert [n["event"]["event_id"] for n in hl["notifications"]] == [mention] and "next_token" not in hl
    assert a.request("GET", f"{V3}/notifications")[1]["notifications"] == []  # a sent them all
    for bad in ("from=abc", "limit=0", "limit=x", "only=everything"):
        status, err = b.request("GET", f"{V3}/notifications?{bad}")
        assert status == 400 and err["errcode"] == "M_INVALID_PARAM", (bad, err)


def _pusher(pushkey: str, app_id: str = "com.example.app", **extra) -> dict:
    return {"kind": "http", "app_id": app_id, "pushkey": pushkey, "app_display_name": "App",
            "device_display_name": "Phone", "lang": "en", "data": {"url": GATEWAY}, **extra}


def test_pusher_api(world, unique):
    srv, _ = world
    u = _user(srv, unique)
    assert u.request("GET", f"{V3}/pushers") == (200, {"pushers": []})
    assert u.request("POST", f"{V3}/pushers/set", _pusher("pk-1", profile_tag="tag"))[0] == 200
    body = _pusher("pk-1", app_display_name="App 2")
    body["data"] = {"url": GATEWAY, "format": "event_id_only", "custom": 1}
    assert u.request("POST", f"{V3}/pushers/set", body)[0] == 200  # same app_id+pushkey: updated
    _, listed = u.request("GET", f"{V3}/pushers")
    assert len(listed["pushers"]) == 1
    p = listed["pushers"][0]
    assert p["app_display_name"] == "App 2" and p["data"]["format"] == "event_id_only"
    assert p["kind"] == "http" and p["lang"] == "en" and p["device_display_name"] == "Phone"
    assert u.request("POST", f"{V3}/pushers/set", _pusher("pk-2"))[0] == 200
    assert len(u.request("GET", f"{V3}/pushers")[1]["pushers"]) == 2
    # kind null deletes it.
    gone = {"kind": None, "app_id": "com.example.app", "pushkey": "pk-2"}
    assert u.request("POST", f"{V3}/pushers/set", gone)[0] == 200
    assert [p["pushkey"] for p in u.request("GET", f"{V3}/pushers")[1]["pushers"]] == ["pk-1"]
    # Refused clearly.
    for bad, code in [({**_pusher("x"), "kind": "email"}, "M_INVALID_PARAM"),
                      ({**_pusher("x"), "kind": "carrier-pigeon"}, "M_INVALID_PARAM"),
                      ({**_pusher("x"), "data": {"url": "http://127.0.0.1:9/push"}}, "M_INVALID_PARAM"),
                      ({**_pusher("x"), "data": {"url": "ftp://h/_matrix/push/v1/notify"}}, "M_INVALID_PARAM"),
                      ({**_pusher("x"), "data": {"url": GATEWAY, "format": "full"}}, "M_INVALID_PARAM"),
                      ({**_pusher("x"), "data": {}}, "M_INVALID_PARAM"),
                      ({**_pusher("x"), "app_id": "a" * 65}, "M_INVALID_PARAM"),
                      ({**_pusher("x"), "pushkey": "k" * 513}, "M_INVALID_PARAM"),
                      ({k: v for k, v in _pusher("x").items() if k != "lang"}, "M_MISSING_PARAM"),
                      ({k: v for k, v in _pusher("x").items() if k != "kind"}, "M_MISSING_PARAM"),
                      ({**_pusher("x"), "append": "yes"}, "M_BAD_JSON"),
                      ({**_pusher("x"), "data": "nope"}, "M_BAD_JSON")]:
        status, err = u.request("POST", f"{V3}/pushers/set", bad)
        assert status == 400 and err["errcode"] == code, (bad, err)
    status, err = u.request("POST", f"{V3}/pushers/set", raw=b"{nope")
    assert status == 400 and err["errcode"] == "M_NOT_JSON"
    assert [p["pushkey"] for p in u.request("GET", f"{V3}/pushers")[1]["pushers"]] == ["pk-1"]


def test_pushkey_moves_between_users_unless_append_and_logout_removes(world, unique):
    srv, _ = world
    first, second, third = _user(srv, unique), _user(srv, unique), _user(srv, unique)
    assert first.request("POST", f"{V3}/pushers/set", _pusher("shared-key"))[0] == 200
    assert second.request("POST", f"{V3}/pushers/set", _pusher("shared-key", append=True))[0] == 200
    assert len(first.request("GET", f"{V3}/pushers")[1]["pushers"]) == 1  # append keeps it
    assert third.request("POST", f"{V3}/pushers/set", _pusher("shared-key"))[0] == 200
    assert first.request("GET", f"{V3}/pushers")[1]["pushers"] == []     # taken over
    assert second.request("GET", f"{V3}/pushers")[1]["pushers"] == []
    # Logging out the device that set a pusher removes it.
    assert third.request("POST", f"{V3}/logout", {})[0] == 200
    status, login = Http(srv.base_url).request("POST", f"{V3}/login", {
        "type": "m.login.password", "user": third.user_id, "password": "secret-pw"})
    assert status == 200
    assert Http(srv.base_url, login["access_token"]).request("GET", f"{V3}/pushers")[1]["pushers"] == []


def test_pushers_and_notifications_stay_within_the_tenant(world, unique):
    srv, admin = world
    acme1, acme2, globex = _user(srv, unique), _user(srv, unique), _user(srv, unique)
    for h, tenant in ((acme1, "acme"), (acme2, "acme"), (globex, "globex")):
        status, body = admin.request("PUT", f"/_homeserver/admin/v1/users/{h.user_id}/tenant", {"tenant_id": tenant})
        assert status == 200, body
    assert acme1.request("POST", f"{V3}/pushers/set", _pusher("tenant-key"))[0] == 200
    # Another tenant's user taking the same pushkey does not reach acme's pusher ...
    assert globex.request("POST", f"{V3}/pushers/set", _pusher("tenant-key"))[0] == 200
    assert len(acme1.request("GET", f"{V3}/pushers")[1]["pushers"]) == 1
    # ... a user of the same tenant does, as the spec says.
    assert acme2.request("POST", f"{V3}/pushers/set", _pusher("tenant-key"))[0] == 200
    assert acme1.request("GET", f"{V3}/pushers")[1]["pushers"] == []
    assert len(globex.request("GET", f"{V3}/pushers")[1]["pushers"]) == 1
    # Notifications are the asker's own: acme's mentions of each other never reach globex.
    status, room = acme1.request("POST", f"{V3}/createRoom", {"invite": [acme2.user_id]})
    acme2.request("POST", f"{V3}/rooms/{room['room_id']}/join", {})
    _send(acme1, room["room_id"], "acme only", **{"m.mentions": {"user_ids": [acme2.user_id, globex.user_id]}})
    assert len(acme2.request("GET", f"{V3}/notifications")[1]["notifications"]) >= 1
    assert globex.request("GET", f"{V3}/notifications")[1]["notifications"] == []
    # The rate-limit override of a user is for server admins only, whoever the user is.
    for target in (acme2.user_id, globex.user_id, "@nobody:test.local"):
        status, err = acme1.request("GET", f"/_homeserver/admin/v1/users/{target}/ratelimit")
        assert status == 403 and err["errcode"] == "M_FORBIDDEN"


def test_counts_of_a_200d_event_survive_a_crash(tmp_path, unique):
    srv = ServerProcess(tmp_path / "hs")
    srv.start()
    try:
        a, b, room = _pair(srv, unique)
        _sync(b)  # b's counts are in memory now
        for i in range(5):
            _send(a, room, f"m{i}")
        _send(a, room, "ping", **{"m.mentions": {"user_ids": [b.user_id]}})
        srv.kill()  # no shutdown hooks: whatever was only in memory is gone
        srv.start()
        assert _counts(_sync(b), room) == (6, 1)
        unread = [n for n in b.request("GET", f"{V3}/notifications")[1]["notifications"] if not n["read"]]
        assert len(unread) == 6
    finally:
        srv.stop()
        srv.stop_postgres()
