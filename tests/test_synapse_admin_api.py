"""The Synapse-compatible admin API (`/_synapse/admin/...`) on a real server: users v2,
deactivate, whois, login as a user, devices, rooms (list, details, members, state,
messages, block), event reports; response shapes as Synapse's docs give them; and the
tenant walls: a tenant admin sees and manages only their tenant's users and rooms, and
anything else answers exactly like something that does not exist."""
from __future__ import annotations

import psycopg2
import pytest

from tests.server_harness import Http
from tests.tenant_world import V3, create_room, running_world

SERVER = "test.local"
A1, A2 = "/_synapse/admin/v1", "/_synapse/admin/v2"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with running_world(tmp_path_factory.mktemp("sadmin")) as w:
        users = {n: w.user(n, "acme") for n in ("alice", "carol", "tadmin")}
        users["bob"] = w.user("bob", "globex")
        users["nadia"] = w.user("nadia", None)
        status, _ = w.admin.request("PUT", f"/_homeserver/admin/v1/users/{users['tadmin'].user_id}/admin_tenant",
                                    {"admin_tenant": "acme"})
        assert status == 200
        acme_room = create_room(users["alice"], name="Acme floor", preset="public_chat")
        assert users["carol"].request("POST", f"{V3}/rooms/{acme_room}/join", {})[0] == 200
        globex_room = create_room(users["bob"], name="Globex floor")
        yield w, users, acme_room, globex_room


def _sql(w, query: str, args: tuple = ()) -> list[tuple]:
    with psycopg2.connect(w.srv.dsn()) as conn, conn.cursor() as cur:
        cur.execute(query, args)
        return cur.fetchall()


def test_server_version_and_non_admins(world):
    w, u, room, _ = world
    status, body = Http(w.srv.base_url).request("GET", f"{A1}/server_version")
    assert status == 200 and isinstance(body["server_version"], str)
    for path in (f"{A2}/users", f"{A1}/rooms", f"{A1}/event_reports", f"{A2}/users/{u['bob'].user_id}"):
        status, body = u["alice"].request("GET", path)
        assert (status, body["errcode"]) == (403, "M_FORBIDDEN"), path
        assert Http(w.srv.base_url).request("GET", path)[0] == 401


def test_list_users_paging_filters_and_order(world):
    w, u, _, _ = world
    status, body = w.admin.request("GET", f"{A2}/users?limit=2&from=0")
    assert status == 200 and len(body["users"]) == 2 and body["total"] >= 6 and body["next_token"] == "2"
    first = body["users"][0]
    assert set(first) >= {"name", "is_guest", "admin", "user_type", "deactivated", "erased", "shadow_banned",
                          "displayname", "avatar_url", "creation_ts", "last_seen_ts", "locked"}
    names = []
    token = "0"
    while token is not None:
        _, page = w.admin.request("GET", f"{A2}/users?limit=2&from={token}")
        names += [x["name"] for x in page["users"]]
        token = page.get("next_token")
    assert names == sorted(names) and len(names) == body["total"]
    _, back = w.admin.request("GET", f"{A2}/users?dir=b&limit=100")
    assert [x["name"] for x in back["users"]] == sorted(names, reverse=True)
    _, by_name = w.admin.request("GET", f"{A2}/users?name=aroL")
    assert [x["name"] for x in by_name["users"]] == [u["carol"].user_id]
    _, by_id = w.admin.request("GET", f"{A2}/users?user_id=bob")
    assert [x["name"] for x in by_id["users"]] == [u["bob"].user_id]
    _, admins = w.admin.request("GET", f"{A2}/users?admins=true")
    assert [x["name"] for x in admins["users"]] == [f"@admin:{SERVER}"]
    _, newest = w.admin.request("GET", f"{A2}/users?order_by=creation_ts&dir=b&limit=1")
    assert newest["users"][0]["name"] == u["nadia"].user_id
    for bad in ("order_by=nonsense", "dir=x", "from=-1", "limit=x", "guests=maybe"):
        status, err = w.admin.request("GET", f"{A2}/users?{bad}")
        assert (status, err["errcode"]) in ((400, "M_INVALID_PARAM"),), bad


def test_create_modify_and_query_a_user(world):
    w, _, _, _ = world
    uid = f"@frank:{SERVER}"
    status, created = w.admin.request("PUT", f"{A2}/users/{uid}", {"password": "frank-pw-1", "displayname": "Frank",
                                                                    "admin": False})
    assert status == 201 and created["name"] == uid and created["displayname"] == "Frank"
    assert created["threepids"] == [] and created["external_ids"] == [] and created["deactivated"] is False
    login = Http(w.srv.base_url).request("POST", f"{V3}/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "frank"}, "password": "frank-pw-1"})
    assert login[0] == 200
    status, changed = w.admin.request("PUT", f"{A2}/users/{uid}", {"displayname": "Frank F", "password": "frank-pw-2"})
    assert status == 200 and changed["displayname"] == "Frank F"
    # A new password logs the user's devices out (logout_devices defaults to true).
    assert Http(w.srv.base_url, login[1]["access_token"]).request("GET", f"{V3}/account/whoami")[0] == 401
    status, got = w.admin.request("GET", f"{A2}/users/{uid}")
    assert status == 200 and got["displayname"] == "Frank F" and got["admin"] is False
    assert abs(got["creation_ts"] - _sql(w, "SELECT created_ts FROM users WHERE user_id = %s", (uid,))[0][0] // 1000) <= 1
    assert w.admin.request("GET", f"{A2}/users/@ghost:{SERVER}")[0] == 404
    assert w.admin.request("GET", f"{A2}/users/@x:elsewhere.org")[0] == 400
    bad = w.admin.request("PUT", f"{A2}/users/{uid}", {"admin": "yes"})
    assert bad[0] == 400 and bad[1]["errcode"] == "M_BAD_JSON"
    # Deactivate through PUT, then reactivate with a new password.
    assert w.admin.request("PUT", f"{A2}/users/{uid}", {"deactivated": True})[1]["deactivated"] is True
    assert w.admin.request("PUT", f"{A2}/users/{uid}", {"deactivated": False, "password": "frank-pw-3"})[1][
        "deactivated"] is False
    assert Http(w.srv.base_url).request("POST", f"{V3}/login", {
        "type": "m.login.password", "user": "frank", "password": "frank-pw-3"})[0] == 200


def test_whois_devices_and_login_as(world):
    w, u, room, _ = world
    carol = u["carol"]
    carol.request("GET", f"{V3}/account/whoami", headers={"User-Agent": "CarolClient/1.0"})
    status, who = w.admin.request("GET", f"{A1}/whois/{carol.user_id}")
    assert status == 200 and who["user_id"] == carol.user_id
    connections = [c for d in who["devices"].values() for s in d["sessions"] for c in s["connections"]]
    assert any(c["user_agent"] == "CarolClient/1.0" and c["ip"] == "127.0.0.1" for c in connections)
    status, devices = w.admin.request("GET", f"{A2}/users/{carol.user_id}/devices")
    assert status == 200 and devices["total"] == len(devices["devices"]) >= 1
    device_id = devices["devices"][0]["device_id"]
    assert w.admin.request("PUT", f"{A2}/users/{carol.user_id}/devices/{device_id}",
                           {"display_name": "carol's phone"})[0] == 200
    assert w.admin.request("GET", f"{A2}/users/{carol.user_id}/devices/{device_id}")[1]["display_name"] == \
        "carol's phone"
    # Login as: a token that works for carol, belongs to none of her devices, and can expire.
    status, body = w.admin.request("POST", f"{A1}/users/{carol.user_id}/login", {})
    assert status == 200
    puppet = Http(w.srv.base_url, body["access_token"])
    assert puppet.request("GET", f"{V3}/account/whoami")[1]["user_id"] == carol.user_id
    assert w.admin.request("GET", f"{A2}/users/{carol.user_id}/devices")[1]["total"] == devices["total"]
    assert w.admin.request("POST", f"{A1}/users/@admin:{SERVER}/login", {})[0] == 400  # not as oneself
    import time
    _, short = w.admin.request("POST", f"{A1}/users/{carol.user_id}/login",
                               {"valid_until_ms": int(time.time() * 1000) + 1500})
    short_lived = Http(w.srv.base_url, short["access_token"])
    assert short_lived.request("GET", f"{V3}/account/whoami")[0] == 200
    time.sleep(1.6)
    assert short_lived.request("GET", f"{V3}/account/whoami")[0] == 401
    _, joined = w.admin.request("GET", f"{A1}/users/{carol.user_id}/joined_rooms")
    assert joined == {"joined_rooms": [room], "total": 1}
    assert w.admin.request("GET", f"{A1}/users/{carol.user_id}/memberships")[1] == {"memberships": {room: "join"}}


def test_rooms_list_details_members_state_messages(world):
    w, u, room, globex_room = world
    status, body = w.admin.request("GET", f"{A1}/rooms")
    assert status == 200 and body["offset"] == 0 and body["total_rooms"] >= 2
    by_id = {r["room_id"]: r for r in body["rooms"]}
    acme = by_id[room]
    assert acme["name"] == "Acme floor" and acme["joined_members"] == 2 and acme["joined_local_members"] == 2
    assert acme["creator"] == u["alice"].user_id and acme["join_rules"] == "public" and acme["federatable"] is True
    assert acme["version"] == "12" and acme["encryption"] is None and acme["state_events"] >= 6
    _, found = w.admin.request("GET", f"{A1}/rooms?search_term=acme")
    assert [r["room_id"] for r in found["rooms"]] == [room]
    _, page = w.admin.request("GET", f"{A1}/rooms?limit=1&order_by=joined_members")
    assert page["rooms"][0]["room_id"] == room and page["next_batch"] == 1
    assert w.admin.request("GET", f"{A1}/rooms?search_term=")[0] == 400
    status, details = w.admin.request("GET", f"{A1}/rooms/{room}")
    assert status == 200 and details["joined_local_devices"] >= 2 and details["forgotten"] is False
    assert details["tombstoned"] is False and details["topic"] is None
    assert w.admin.request("GET", f"{A1}/rooms/{room}/members")[1] == {
        "members": sorted([u["alice"].user_id, u["carol"].user_id]), "total": 2}
    _, state = w.admin.request("GET", f"{A1}/rooms/{room}/state?type=m.room.name")
    assert [s["content"] for s in state["state"]] == [{"name": "Acme floor"}]
    u["alice"].request("PUT", f"{V3}/rooms/{room}/send/m.room.message/a1", {"msgtype": "m.text", "body": "hi"})
    _, msgs = w.admin.request("GET", f"{A1}/rooms/{room}/messages?dir=b&limit=1")
    assert msgs["chunk"][0]["content"]["body"] == "hi" and "end" in msgs
    missing = w.admin.request("GET", f"{A1}/rooms/!nope:{SERVER}")
    assert (missing[0], missing[1]["errcode"]) == (404, "M_NOT_FOUND")


def test_block_room(world):
    w, u, _, _ = world
    room = create_room(u["alice"], preset="public_chat")
    assert w.admin.request("GET", f"{A1}/rooms/{room}/block")[1] == {"block": False}
    assert w.admin.request("PUT", f"{A1}/rooms/{room}/block", {"block": True})[1] == {"block": True}
    assert w.admin.request("GET", f"{A1}/rooms/{room}/block")[1] == {"block": True, "user_id": f"@admin:{SERVER}"}
    status, err = u["carol"].request("POST", f"{V3}/rooms/{room}/join", {})
    assert (status, err["errcode"]) == (403, "M_FORBIDDEN")
    assert _sql(w, "SELECT user_id FROM blocked_rooms WHERE room_id = %s", (room,)) == [(f"@admin:{SERVER}",)]
    assert w.admin.request("PUT", f"{A1}/rooms/{room}/block", {"block": False})[1] == {"block": False}
    assert u["carol"].request("POST", f"{V3}/rooms/{room}/join", {})[0] == 200
    # Unknown rooms can be blocked ahead of time, by server admins.
    assert w.admin.request("PUT", f"{A1}/rooms/!future:{SERVER}/block", {"block": True})[0] == 200
    assert w.admin.request("PUT", f"{A1}/rooms/{room}/block", {"block": "yes"})[1]["errcode"] == "M_BAD_JSON"


def test_event_reports(world):
    w, u, room, _ = world
    alice, carol = u["alice"], u["carol"]
    _, sent = carol.request("PUT", f"{V3}/rooms/{room}/send/m.room.message/r1", {"msgtype": "m.text", "body": "spam"})
    assert alice.request("POST", f"{V3}/rooms/{room}/report/{sent['event_id']}", {"reason": "spam", "score": -100})[0] \
        == 200
    status, body = w.admin.request("GET", f"{A1}/event_reports?room_id={room}")
    assert status == 200 and body["total"] == 1
    report = body["event_reports"][0]
    assert report["event_id"] == sent["event_id"] and report["user_id"] == alice.user_id
    assert report["sender"] == carol.user_id and report["name"] == "Acme floor" and report["score"] == -100
    _, one = w.admin.request("GET", f"{A1}/event_reports/{report['id']}")
    assert one["event_json"]["content"]["body"] == "spam" and one["event_json"]["sender"] == carol.user_id
    _, by_sender = w.admin.request("GET", f"{A1}/event_reports?event_sender_user_id={carol.user_id}")
    assert [r["id"] for r in by_sender["event_reports"]] == [report["id"]]
    assert w.admin.request("DELETE", f"{A1}/event_reports/{report['id']}")[0] == 200
    assert w.admin.request("GET", f"{A1}/event_reports/{report['id']}")[0] == 404
    assert w.admin.request("GET", f"{A1}/event_reports/abc")[0] == 400


def test_tenant_admin_sees_only_their_tenant(world):
    w, u, acme_room, globex_room = world
    tadmin, bob = u["tadmin"], u["bob"]
    _, users = tadmin.request("GET", f"{A2}/users?limit=100")
    assert {x["name"] for x in users["users"]} == {u[n].user_id for n in ("alice", "carol", "tadmin")}
    assert users["total"] == 3
    _, rooms = tadmin.request("GET", f"{A1}/rooms")
    assert globex_room not in {r["room_id"] for r in rooms["rooms"]} and acme_room in {r["room_id"] for r in
                                                                                       rooms["rooms"]}
    missing_user = tadmin.request("GET", f"{A2}/users/@nobody:{SERVER}")
    missing_room = tadmin.request("GET", f"{A1}/rooms/!nope:{SERVER}")
    assert missing_user[0] == 404 and missing_room[0] == 404
    # Another tenant's (or no tenant's) user and room: exactly like missing ones.
    for path in (f"{A2}/users/{bob.user_id}", f"{A2}/users/{u['nadia'].user_id}", f"{A1}/whois/{bob.user_id}",
                 f"{A2}/users/{bob.user_id}/devices", f"{A1}/users/{bob.user_id}/joined_rooms"):
        assert tadmin.request("GET", path) == missing_user, path
    assert tadmin.request("POST", f"{A1}/users/{bob.user_id}/login", {}) == missing_user
    assert tadmin.request("POST", f"{A1}/deactivate/{bob.user_id}", {}) == missing_user
    assert tadmin.request("PUT", f"{A2}/users/{bob.user_id}", {"displayname": "pwned"}) == missing_user
    for path in (f"{A1}/rooms/{globex_room}", f"{A1}/rooms/{globex_room}/members",
                 f"{A1}/rooms/{globex_room}/state", f"{A1}/rooms/{globex_room}/messages",
                 f"{A1}/rooms/{globex_room}/block"):
        assert tadmin.request("GET", path) == missing_room, path
    assert tadmin.request("DELETE", f"{A2}/rooms/{globex_room}", {}) == missing_room
    assert tadmin.request("POST", f"{A1}/purge_history/{globex_room}", {"purge_up_to_ts": 1}) == missing_room
    assert tadmin.request("PUT", f"{A1}/rooms/{globex_room}/block", {"block": True}) == missing_room
    assert tadmin.request("GET", f"/_homeserver/admin/v1/rooms/{globex_room}/export") == missing_room
    assert _sql(w, "SELECT displayname, deactivated FROM users WHERE user_id = %s", (bob.user_id,)) == [("bob", False)]
    assert _sql(w, "SELECT count(*) FROM blocked_rooms WHERE room_id = %s", (globex_room,)) == [(0,)]
    # Within the tenant it works; new users land in the tenant; no path to server admin.
    assert tadmin.request("GET", f"{A2}/users/{u['alice'].user_id}")[0] == 200
    assert tadmin.request("GET", f"{A1}/rooms/{acme_room}/members")[0] == 200
    status, created = tadmin.request("PUT", f"{A2}/users/@acme-new:{SERVER}", {"password": "pw-acme-new"})
    assert status == 201 and created["io.erpchat.tenant_id"] == "acme"
    assert tadmin.request("PUT", f"{A2}/users/@acme-new:{SERVER}", {"admin": True})[0] == 403
    assert tadmin.request("PUT", f"{A1}/users/{u['alice'].user_id}/admin", {"admin": True})[0] == 403
    assert tadmin.request("PUT", f"/_homeserver/admin/v1/users/{tadmin.user_id}/admin_tenant",
                          {"admin_tenant": "globex"})[0] == 403
    # Reports of other tenants' rooms are not listed.
    _, sent = bob.request("PUT", f"{V3}/rooms/{globex_room}/send/m.room.message/g1", {"msgtype": "m.text", "body": "x"})
    assert bob.request("POST", f"{V3}/rooms/{globex_room}/report/{sent['event_id']}", {"reason": "x"})[0] == 200
    _, reports = tadmin.request("GET", f"{A1}/event_reports")
    assert all(r["room_id"] != globex_room for r in reports["event_reports"])
    _, all_reports = w.admin.request("GET", f"{A1}/event_reports?room_id={globex_room}")
    report_id = all_reports["event_reports"][0]["id"]
    assert tadmin.request("GET", f"{A1}/event_reports/{report_id}") == tadmin.request(
        "GET", f"{A1}/event_reports/999999")
