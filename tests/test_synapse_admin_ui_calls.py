"""synapse-admin (Awesome-Technologies/synapse-admin, 0.11.x) against our server: its
web UI cannot be built here (its release tarball is not reachable and a build needs the
whole npm tree), so this test replays the HTTP calls its pages make, built the way its
data provider builds them (src/synapse/dataProvider.ts: resource paths, `from`/`limit`/
`order_by`/`dir` paging, the query-string encoding that drops undefined values, the
bodies of create/update/delete) and checks each answer has what the page's mapper
reads. Pages: login, users (list, show with devices/connections/rooms, create, edit,
delete), rooms (list, show with members/state/forward extremities, delete), reports
(list, show, delete). Media tabs are not replayed: media is not served yet."""
from __future__ import annotations

import time
from urllib.parse import quote, urlencode

import pytest

from tests.server_harness import Http
from tests.tenant_world import V3, create_room, running_world

SERVER = "test.local"


def _qs(query: dict) -> str:
    """query-string's stringify: keys sorted, undefined (None) dropped, booleans as words."""
    items = [(k, str(v).lower() if isinstance(v, bool) else v) for k, v in sorted(query.items()) if v is not None]
    return urlencode(items)


class DataProvider:
    """The calls of synapse-admin's data provider, for the resources its pages use."""
    PATHS = {"users": "/_synapse/admin/v2/users", "rooms": "/_synapse/admin/v1/rooms",
             "reports": "/_synapse/admin/v1/event_reports", "connections": "/_synapse/admin/v1/whois"}
    REFERENCES = {
        "devices": ("/_synapse/admin/v2/users/{id}/devices", "devices"),
        "joined_rooms": ("/_synapse/admin/v1/users/{id}/joined_rooms", "joined_rooms"),
        "room_members": ("/_synapse/admin/v1/rooms/{id}/members", "members"),
        "room_state": ("/_synapse/admin/v1/rooms/{id}/state", "state"),
        "forward_extremities": ("/_synapse/admin/v1/rooms/{id}/forward_extremities", "results"),
    }
    DATA = {"users": "users", "rooms": "rooms", "reports": "event_reports"}

    def __init__(self, http: Http) -> None:
        self.http = http

    def _ok(self, method: str, path: str, body=None) -> dict:
        status, answer = self.http.request(method, path, body)
        assert status in (200, 201), (method, path, status, answer)
        return answer

    def get_list(self, resource: str, page: int, per_page: int, field: str, order: str, **filters) -> dict:
        query = {"from": (page - 1) * per_page, "limit": per_page, "order_by": field,
                 "dir": "b" if order == "DESC" else "f", **filters}
        return self._ok("GET", f"{self.PATHS[resource]}?{_qs(query)}")

    def get_one(self, resource: str, record_id: str) -> dict:
        return self._ok("GET", f"{self.PATHS[resource]}/{quote(record_id, safe='')}")

    def get_many_reference(self, resource: str, record_id: str, field: str = "id", order: str = "ASC") -> list:
        path, data = self.REFERENCES[resource]
        encoded = quote(record_id, safe="") if resource in ("devices", "joined_rooms") else record_id
        query = {"from": 0, "limit": 25, "order_by": field, "dir": "b" if order == "DESC" else "f"}
        answer = self._ok("GET", path.format(id=encoded) + "?" + _qs(query))
        assert isinstance(answer[data], list)
        return answer[data]

    def update(self, resource: str, record_id: str, data: dict) -> dict:
        body = {k: v for k, v in data.items() if v is not None or k == "user_type"}  # filterNullValues
        return self._ok("PUT", f"{self.PATHS[resource]}/{quote(record_id, safe='')}", body)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with running_world(tmp_path_factory.mktemp("ui")) as w:
        alice, carol = w.user("alice", None), w.user("carol", None)
        room = create_room(alice, name="Shop", preset="public_chat")
        assert carol.request("POST", f"{V3}/rooms/{room}/join", {})[0] == 200
        _, sent = carol.request("PUT", f"{V3}/rooms/{room}/send/m.room.message/s", {"msgtype": "m.text", "body": "!"})
        assert alice.request("POST", f"{V3}/rooms/{room}/report/{sent['event_id']}", {"reason": "rude"})[0] == 200
        yield w, alice, carol, room


def test_login_page(world):
    w, *_ = world
    anon = Http(w.srv.base_url)
    assert "server_version" in anon.request("GET", "/_synapse/admin/v1/server_version")[1]
    assert "versions" in anon.request("GET", "/_matrix/client/versions")[1]
    flows = anon.request("GET", "/_matrix/client/r0/login")[1]["flows"]
    assert {"type": "m.login.password"} in flows
    status, login = anon.request("POST", "/_matrix/client/r0/login", {
        "device_id": None, "initial_device_display_name": "Synapse Admin", "type": "m.login.password",
        "user": "admin", "password": "adm-pw", "identifier": {"type": "m.id.user", "user": "admin"}})
    assert status == 200 and login["home_server"] == SERVER and login["user_id"] == f"@admin:{SERVER}"


def test_users_pages(world):
    w, alice, carol, room = world
    dp = DataProvider(w.admin)
    listed = dp.get_list("users", 1, 10, "name", "ASC", guests=True, deactivated=False, locked=False, name=None)
    assert listed["total"] >= 3
    for user in listed["users"]:  # what the list mapper and columns read
        assert {"name", "displayname", "is_guest", "admin", "deactivated", "locked", "erased", "creation_ts"} <= set(user)
    searched = dp.get_list("users", 1, 10, "name", "ASC", guests=True, deactivated=False, locked=False, name="car")
    assert [u["name"] for u in searched["users"]] == [carol.user_id]
    # Show/edit page: the record, then its tabs.
    record = dp.get_one("users", carol.user_id)
    assert record["name"] == carol.user_id and isinstance(record["threepids"], list)
    devices = dp.get_many_reference("devices", carol.user_id)
    assert devices and all("device_id" in d and "last_seen_ts" in d for d in devices)
    whois = dp.get_one("connections", carol.user_id)
    assert whois["user_id"] == carol.user_id
    for device in whois["devices"].values():
        assert isinstance(device["sessions"][0]["connections"], list)
    assert dp.get_many_reference("joined_rooms", carol.user_id) == [room]
    # Edit: the form sends the whole record back with the change.
    record = {**record, "id": record["name"], "displayname": "Carol C", "avatar_src": None,
              "creation_ts_ms": record["creation_ts"] * 1000}
    updated = dp.update("users", carol.user_id, record)
    assert updated["displayname"] == "Carol C" and updated["name"] == carol.user_id
    # Create: PUT to @{id}:{home_server}.
    status, created = w.admin.request("PUT", f"/_synapse/admin/v2/users/@{quote('newbie')}:{SERVER}", {
        "id": "newbie", "displayname": "Newbie", "password": "newbie-pw", "admin": False, "threepids": [],
        "external_ids": []})
    assert status == 201 and created["name"] == f"@newbie:{SERVER}"
    # Delete: deactivate with erase.
    status, _ = w.admin.request("POST", f"/_synapse/admin/v1/deactivate/{quote(f'@newbie:{SERVER}', safe='')}",
                                {"erase": True})
    assert status == 200
    gone = dp.get_list("users", 1, 50, "name", "ASC", guests=True, deactivated=False, locked=False)
    assert f"@newbie:{SERVER}" not in [u["name"] for u in gone["users"]]
    shown = dp.get_list("users", 1, 50, "name", "ASC", guests=True, deactivated=True, locked=False)
    assert f"@newbie:{SERVER}" in [u["name"] for u in shown["users"]]


def test_rooms_pages(world):
    w, alice, carol, room = world
    dp = DataProvider(w.admin)
    listed = dp.get_list("rooms", 1, 10, "name", "ASC", search_term=None)
    assert listed["total_rooms"] >= 1
    for r in listed["rooms"]:
        assert {"room_id", "name", "canonical_alias", "joined_members", "joined_local_members", "version",
                "creator", "encryption", "federatable", "public", "join_rules", "guest_access",
                "history_visibility", "state_events"} <= set(r)
    assert [r["room_id"] for r in dp.get_list("rooms", 1, 10, "name", "ASC", search_term="Shop")["rooms"]] == [room]
    by_members = dp.get_list("rooms", 1, 10, "joined_members", "DESC")  # dir=b flips Synapse's largest-first
    counts = [r["joined_members"] for r in by_members["rooms"]]
    assert counts == sorted(counts)
    shown = dp.get_one("rooms", room)
    assert shown["room_id"] == room and "topic" in shown and "joined_local_devices" in shown
    assert sorted(dp.get_many_reference("room_members", room)) == sorted([alice.user_id, carol.user_id])
    state = dp.get_many_reference("room_state", room)
    assert all({"type", "origin_server_ts", "content", "sender", "event_id"} <= set(s) for s in state)
    extremities = dp.get_many_reference("forward_extremities", room)  # a linear room has one
    assert len(extremities) == 1 and {"event_id", "received_ts", "depth", "state_group"} <= set(extremities[0])
    # Delete from the list: DELETE v2 with {"block": false}.
    doomed = create_room(alice, name="Doomed")
    status, body = w.admin.request("DELETE", f"/_synapse/admin/v2/rooms/{doomed}", {"block": False})
    assert status == 200 and body["delete_id"]
    deadline = time.time() + 20
    while w.admin.request("GET", f"/_synapse/admin/v2/rooms/delete_status/{body['delete_id']}")[1]["status"] != \
            "complete":
        assert time.time() < deadline
        time.sleep(0.1)
    assert doomed not in [r["room_id"] for r in dp.get_list("rooms", 1, 50, "name", "ASC")["rooms"]]


def test_reports_pages(world):
    w, alice, carol, room = world
    dp = DataProvider(w.admin)
    listed = dp.get_list("reports", 1, 10, "received_ts", "DESC")
    assert listed["total"] == 1
    report = listed["event_reports"][0]
    assert {"id", "received_ts", "user_id", "score", "reason", "name", "canonical_alias", "room_id",
            "event_id", "sender"} <= set(report)
    shown = dp.get_one("reports", str(report["id"]))
    assert shown["event_json"]["type"] == "m.room.message" and shown["event_json"]["content"]["body"] == "!"
    # Delete: react-admin's default DELETE, with the record as the body.
    status, _ = w.admin.request("DELETE", f"/_synapse/admin/v1/event_reports/{report['id']}", shown)
    assert status == 200
    assert dp.get_list("reports", 1, 10, "received_ts", "DESC")["total"] == 0
