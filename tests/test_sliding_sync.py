"""Simplified sliding sync (MSC4186) over HTTP against a real server: lists and windows in
activity order, room payloads, subscriptions, required_state, filters, extensions,
connections (`pos`), long-polling, bad input and the tenant walls."""
from __future__ import annotations

import threading
import time
import uuid
from urllib.parse import quote

import pytest

from tests.server_harness import Http
from tests.tenant_world import running_world

SS = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
V3 = "/_matrix/client/v3"
TTL = 3
LAZY_ROOM = [["m.room.create", ""], ["m.room.name", ""], ["m.room.member", "$LAZY"], ["m.room.member", "$ME"]]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with running_world(tmp_path_factory.mktemp("sliding"),
                       extra_config=f"sliding_sync:\n  connection_ttl_seconds: {TTL}\n") as w:
        yield w


class Client:
    """A user speaking sliding sync with raw JSON, plus the few v3 calls the tests need."""

    def __init__(self, http: Http) -> None:
        self.http = http
        self.user_id: str = http.user_id  # type: ignore[attr-defined]
        self.pos: str | None = None

    def ss_raw(self, body, pos: str | None = None, timeout: int | None = None, raw: bytes | None = None):
        query = []
        if pos is not None:
            query.append("pos=" + quote(pos, safe=""))
        if timeout is not None:
            query.append(f"timeout={timeout}")
        return self.http.request("POST", SS + ("?" + "&".join(query) if query else ""), body, raw=raw)

    def ss(self, body: dict, timeout: int | None = None, fresh: bool = False) -> dict:
        """One request of this client's connection (a new one with `fresh`)."""
        status, resp = self.ss_raw(body, None if fresh else self.pos, timeout)
        assert status == 200, resp
        self.pos = resp["pos"]
        return resp

    def ok(self, method: str, path: str, body=None):
        status, resp = self.http.request(method, V3 + path, body)
        assert status == 200, (method, path, status, resp)
        return resp

    def create_room(self, **body) -> str:
        return self.ok("POST", "/createRoom", body)["room_id"]

    def send(self, room_id: str, text: str, event_type: str = "m.room.message") -> str:
        return self.ok("PUT", f"/rooms/{quote(room_id)}/send/{event_type}/{uuid.uuid4().hex}",
                       {"msgtype": "m.text", "body": text})["event_id"]

    def put_state(self, room_id: str, event_type: str, content: dict, state_key: str = "") -> str:
        return self.ok("PUT", f"/rooms/{quote(room_id)}/state/{event_type}/{quote(state_key)}", content)["event_id"]

    def join(self, room_id: str) -> None:
        self.ok("POST", f"/rooms/{quote(room_id)}/join", {})

    def account_data(self, data_type: str, content: dict, room_id: str | None = None) -> None:
        where = f"/rooms/{quote(room_id)}" if room_id else ""
        self.ok("PUT", f"/user/{quote(self.user_id)}{where}/account_data/{data_type}", content)


@pytest.fixture
def new_user(world):
    def make(tenant: str | None = None) -> Client:
        return Client(world.user(f"ss{uuid.uuid4().hex[:10]}", tenant))
    return make


def window(start: int, end: int, limit: int = 1, required_state=None, **extra) -> dict:
    return {"ranges": [[start, end]], "timeline_limit": limit,
            "required_state": required_state if required_state is not None else LAZY_ROOM, **extra}


def room_ids(resp: dict, key: str = "all") -> list[str]:
    return resp["lists"][key]["ops"][0]["room_ids"]


def _rooms_with_messages(user: Client, n: int) -> list[str]:
    """n rooms, each with one message, sent oldest first: returns them newest first."""
    rooms = []
    for i in range(n):
        room_id = user.create_room(name=f"room {i}")
        rooms.append(room_id)
    for i, room_id in enumerate(rooms):
        user.send(room_id, f"message {i}")
    return rooms[::-1]


# ---- discovery ----------------------------------------------------------------------

def test_versions_advertise_simplified_sliding_sync(world):
    status, body = Http(world.srv.base_url).request("GET", "/_matrix/client/versions")
    assert status == 200
    assert body["unstable_features"]["org.matrix.simplified_msc3575"] is True


# ---- lists, windows, ordering ---------------------------------------------------------

def test_first_window_is_the_most_recent_rooms_with_their_payload(new_user):
    a, b = new_user(), new_user()
    newest_first = _rooms_with_messages(a, 12)
    top = newest_first[0]
    a.ok("POST", f"/rooms/{quote(top)}/invite", {"user_id": b.user_id})
    b.join(top)
    b.send(top, "hello @everyone")
    resp = a.ss({"lists": {"all": window(0, 4, limit=2)}})
    assert resp["lists"]["all"]["count"] == 12
    assert room_ids(resp) == newest_first[:5]
    assert set(resp["rooms"]) == set(newest_first[:5])
    room = resp["rooms"][top]
    assert room["initial"] is True
    assert room["name"] == "room 11"
    assert room["joined_count"] == 2 and room["invited_count"] == 0
    assert [e["type"] for e in room["timeline"]] == ["m.room.member", "m.room.message"]
    assert room["timeline"][-1]["content"]["body"] == "hello @everyone"
    assert room["limited"] is True and room["prev_batch"]
    assert "room_id" not in room["timeline"][0]
    assert room["num_live"] == 0
    assert isinstance(room["bump_stamp"], int)
    assert room["notification_count"] == 1  # b's message notifies a
    # required_state: create, name, $ME and the lazy member of b (the timeline's sender)
    keys = {(e["type"], e["state_key"]) for e in room["required_state"]}
    assert keys == {("m.room.create", ""), ("m.room.name", ""), ("m.room.member", a.user_id),
                    ("m.room.member", b.user_id)}
    stamps = [resp["rooms"][r]["bump_stamp"] for r in newest_first[:5]]
    assert stamps == sorted(stamps, reverse=True)


def test_scrolling_the_window_sends_only_the_new_rooms(new_user):
    a = new_user()
    newest_first = _rooms_with_messages(a, 8)
    first = a.ss({"lists": {"all": window(0, 2)}})
    assert set(first["rooms"]) == set(newest_first[:3])
    second = a.ss({"lists": {"all": window(0, 5)}})
    assert room_ids(second) == newest_first[:6]
    assert set(second["rooms"]) == set(newest_first[3:6])
    assert all(r["initial"] for r in second["rooms"].values())
    # Nothing new: an immediate answer with no rooms.
    third = a.ss({"lists": {"all": window(0, 5)}})
    assert third["rooms"] == {}
    assert third["lists"]["all"]["count"] == 8


def test_a_new_message_bumps_its_room_into_the_window(new_user):
    a = new_user()
    newest_first = _rooms_with_messages(a, 6)
    bottom = newest_first[-1]
    a.ss({"lists": {"all": window(0, 2)}})
    a.send(bottom, "I am back")
    resp = a.ss({"lists": {"all": window(0, 2)}})
    assert room_ids(resp)[0] == bottom
    room = resp["rooms"][bottom]
    assert room["initial"] is True  # the connection never had it
    assert room["timeline"][-1]["content"]["body"] == "I am back"
    assert room["num_live"] == 1
    # A room the client has gets just what is new.
    a.send(bottom, "again")
    resp = a.ss({"lists": {"all": window(0, 2)}})
    room = resp["rooms"][bottom]
    assert "initial" not in room
    assert [e["content"]["body"] for e in room["timeline"]] == ["again"]
    assert room["limited"] is False and room["num_live"] == 1
    assert "name" not in room  # unchanged since it was sent


def test_non_bump_events_do_not_reorder_the_list(new_user):
    a = new_user()
    newest_first = _rooms_with_messages(a, 3)
    bottom = newest_first[-1]
    a.put_state(bottom, "m.room.topic", {"topic": "state is not activity"})
    resp = a.ss({"lists": {"all": window(0, 2)}})
    assert room_ids(resp) == newest_first


def test_invites_come_with_stripped_state_and_filter(new_user):
    a, b = new_user(), new_user()
    _rooms_with_messages(b, 2)
    room_id = a.create_room(name="come in", invite=[b.user_id])
    resp = b.ss({"lists": {"all": window(0, 9), "invites": window(0, 9, filters={"is_invite": True}),
                           "joined": window(0, 9, filters={"is_invite": False})}})
    assert room_ids(resp, "invites") == [room_id]
    assert room_id not in room_ids(resp, "joined") and resp["lists"]["joined"]["count"] == 2
    assert room_ids(resp, "all")[0] == room_id  # the invite is the newest activity
    room = resp["rooms"][room_id]
    assert room["initial"] is True
    stripped = {(e["type"], e["state_key"]): e for e in room["invite_state"]}
    assert stripped[("m.room.name", "")]["content"]["name"] == "come in"
    assert stripped[("m.room.member", b.user_id)]["content"]["membership"] == "invite"
    assert "timeline" not in room and "required_state" not in room
    # Joining sends the room anew, now in full.
    b.join(room_id)
    resp = b.ss({"lists": {"all": window(0, 9)}})
    room = resp["rooms"][room_id]
    assert room["initial"] is True and "invite_state" not in room
    assert room["timeline"][-1]["type"] == "m.room.member"
    assert room["timeline"][-1]["state_key"] == b.user_id


def test_invite_from_an_ignored_user_is_not_shown(new_user):
    a, b = new_user(), new_user()
    b.account_data("m.ignored_user_list", {"ignored_users": {a.user_id: {}}})
    room_id = a.create_room(invite=[b.user_id])
    resp = b.ss({"lists": {"all": window(0, 9)}, "room_subscriptions": {room_id: {
        "timeline_limit": 1, "required_state": []}}})
    assert resp["lists"]["all"]["count"] == 0 and room_id not in resp["rooms"]


def test_room_subscription_sends_a_full_timeline(new_user):
    a = new_user()
    rooms = _rooms_with_messages(a, 4)
    old = rooms[-1]
    for i in range(5):
        a.send(rooms[-1] if i == 0 else rooms[0], f"more {i}")
    resp = a.ss({"lists": {"all": window(0, 0)},
                 "room_subscriptions": {old: {"timeline_limit": 50, "required_state": [["*", "*"]]}}})
    assert set(resp["rooms"]) == {rooms[0], old}
    room = resp["rooms"][old]
    bodies = [e["content"].get("body") for e in room["timeline"] if e["type"] == "m.room.message"]
    assert bodies == ["message 0", "more 0"]
    assert room["timeline"][0]["type"] == "m.room.create" and room["limited"] is False
    state_types = {e["type"] for e in room["required_state"]}
    assert {"m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.name"} <= state_types
    # The window's room got its own (list) config: one event, lazy members only.
    top = resp["rooms"][rooms[0]]
    assert len(top["timeline"]) == 1 and {e["type"] for e in top["required_state"]} <= {
        "m.room.create", "m.room.name", "m.room.member"}


def test_subscriptions_to_rooms_the_user_cannot_see_are_ignored(new_user):
    a, b = new_user(), new_user()
    private = a.create_room(name="a's own")
    resp = b.ss({"room_subscriptions": {
        private: {"timeline_limit": 5, "required_state": [["*", "*"]]},
        "!nosuchroom:test.local": {"timeline_limit": 5, "required_state": []},
        "not even a room id": {"timeline_limit": 5, "required_state": []}}})
    assert resp["rooms"] == {}


def test_timeline_limit_increase_expands_the_timeline(new_user):
    a = new_user()
    room_id = a.create_room(name="chatty")
    for i in range(5):
        a.send(room_id, f"m{i}")
    resp = a.ss({"lists": {"all": window(0, 0, limit=1)}})
    assert [e["content"]["body"] for e in resp["rooms"][room_id]["timeline"]] == ["m4"]
    resp = a.ss({"lists": {"all": window(0, 0, limit=3)}})
    room = resp["rooms"][room_id]
    assert room["unstable_expanded_timeline"] is True and "initial" not in room
    assert [e["content"]["body"] for e in room["timeline"]] == ["m2", "m3", "m4"]
    # Back to 1 and up to 3 again with no gap: the client already has those three.
    assert a.ss({"lists": {"all": window(0, 0, limit=1)}})["rooms"] == {}
    assert a.ss({"lists": {"all": window(0, 0, limit=3)}})["rooms"] == {}


def test_required_state_wildcards_me_and_lazy_members(new_user):
    a, b, c = new_user(), new_user(), new_user()
    room_id = a.create_room(name="state", invite=[b.user_id, c.user_id])
    b.join(room_id)
    c.join(room_id)
    a.put_state(room_id, "org.example.widget", {"n": 1}, "w1")
    a.put_state(room_id, "org.example.widget", {"n": 2}, "w2")
    a.put_state(room_id, "org.example.keyed", {"k": 1}, "shared-key")
    b.send(room_id, "from b")

    def keys(required_state, limit=1) -> set:
        resp = a.ss({"lists": {"all": window(0, 0, limit=limit, required_state=required_state)}}, fresh=True)
        return {(e["type"], e["state_key"]) for e in resp["rooms"][room_id].get("required_state", [])}

    assert keys([["org.example.widget", "*"]]) == {("org.example.widget", "w1"), ("org.example.widget", "w2")}
    assert keys([["*", "shared-key"]]) == {("org.example.keyed", "shared-key")}
    assert keys([["m.room.member", "$ME"]]) == {("m.room.member", a.user_id)}
    # Lazy: the sender of the one timeline event (b), not c.
    assert keys([["m.room.member", "$LAZY"]]) == {("m.room.member", b.user_id)}
    everything = keys([["*", "*"]])
    assert ("m.room.member", c.user_id) in everything and ("org.example.widget", "w2") in everything
    assert keys([]) == set()


def test_incremental_state_changes_and_lazy_members(new_user):
    a, b = new_user(), new_user()
    room_id = a.create_room(name="before", invite=[b.user_id])
    spec = {"lists": {"all": window(0, 0, limit=5, required_state=[
        ["m.room.name", ""], ["m.room.topic", ""], ["m.room.member", "$LAZY"]])}}
    a.ss(spec)
    b.join(room_id)
    a.put_state(room_id, "m.room.name", {"name": "after"})
    a.put_state(room_id, "org.example.unasked", {"x": 1})
    b.send(room_id, "hi")
    room = a.ss(spec)["rooms"][room_id]
    assert room["name"] == "after"
    keys = {(e["type"], e["state_key"]) for e in room["required_state"]}
    # The new name, and b's membership (a gapless update carries membership changes).
    assert keys == {("m.room.name", ""), ("m.room.member", b.user_id)}
    assert room["joined_count"] == 2
    # b's member event is not sent again for b's next message.
    b.send(room_id, "hi again")
    room = a.ss(spec)["rooms"][room_id]
    assert "required_state" not in room
    assert [e["content"]["body"] for e in room["timeline"]] == ["hi again"]


def test_heroes_for_an_unnamed_room(new_user):
    a, b = new_user(), new_user()
    room_id = a.create_room(invite=[b.user_id], is_direct=True)
    b.join(room_id)
    b.ok("PUT", f"/rooms/{quote(room_id)}/state/m.room.member/{quote(b.user_id)}",
         {"membership": "join", "displayname": "Bee"})
    room = a.ss({"lists": {"all": window(0, 0)}})["rooms"][room_id]
    assert "name" not in room
    assert room["heroes"] == [{"user_id": b.user_id, "displayname": "Bee"}]


# ---- filters -------------------------------------------------------------------------

def test_list_filters(new_user):
    a, b = new_user(), new_user()
    plain = a.create_room(name="plain")
    dm = a.create_room(invite=[b.user_id], is_direct=True)
    encrypted = a.create_room(name="secret", initial_state=[
        {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": "m.megolm.v1.aes-sha2"}}])
    space = a.create_room(name="space", creation_content={"type": "m.space"})
    child = a.create_room(name="child")
    a.put_state(space, "m.space.child", {"via": ["test.local"]}, child)
    a.account_data("m.direct", {b.user_id: [dm]})
    a.ok("PUT", f"/user/{quote(a.user_id)}/rooms/{quote(plain)}/tags/m.favourite", {})
    a.ok("PUT", f"/user/{quote(a.user_id)}/rooms/{quote(child)}/tags/m.lowpriority", {})

    def listed(filters: dict) -> set[str]:
        resp = a.ss({"lists": {"f": window(0, 99, filters=filters)}}, fresh=True)
        assert resp["lists"]["f"]["count"] == len(room_ids(resp, "f"))
        return set(room_ids(resp, "f"))

    everyone = {plain, dm, encrypted, space, child}
    assert listed({}) == everyone
    assert listed({"is_dm": True}) == {dm}
    assert listed({"is_dm": False}) == everyone - {dm}
    assert listed({"is_encrypted": True}) == {encrypted}
    assert listed({"room_types": ["m.space"]}) == {space}
    assert listed({"not_room_types": ["m.space"]}) == everyone - {space}
    assert listed({"room_types": [None]}) == everyone - {space}
    assert listed({"spaces": [space]}) == {child}
    assert listed({"spaces": ["!unknown:test.local"]}) == set()
    assert listed({"tags": ["m.favourite"]}) == {plain}
    assert listed({"not_tags": ["m.lowpriority"]}) == everyone - {child}
    assert listed({"tags": ["m.favourite", "m.lowpriority"], "not_tags": ["m.lowpriority"]}) == {plain}
    assert listed({"is_dm": False, "is_encrypted": False, "not_room_types": ["m.space"]}) == {plain, child}
    # is_dm in the payload of a DM room.
    resp = a.ss({"room_subscriptions": {dm: {"timeline_limit": 1, "required_state": []}}}, fresh=True)
    assert resp["rooms"][dm]["is_dm"] is True


def test_list_without_ranges_has_every_room(new_user):
    a = new_user()
    rooms = _rooms_with_messages(a, 3)
    resp = a.ss({"lists": {"all": {"timeline_limit": 0, "required_state": []}}})
    assert room_ids(resp) == rooms and resp["lists"]["all"]["count"] == 3
    assert all("timeline" not in r for r in resp["rooms"].values())


# ---- leaving, kicks ------------------------------------------------------------------

def test_left_and_kicked_rooms(new_user):
    a, b = new_user(), new_user()
    left = a.create_room(name="leave me")
    kicked = b.create_room(name="kick a", invite=[a.user_id])
    a.join(kicked)
    spec = {"lists": {"all": window(0, 9)}}
    a.ss(spec)
    a.ok("POST", f"/rooms/{quote(left)}/leave", {})
    b.ok("POST", f"/rooms/{quote(kicked)}/kick", {"user_id": a.user_id})
    resp = a.ss(spec)
    # The client had both: it is told of the leave and of the kick.
    assert resp["rooms"][left]["timeline"][-1]["content"]["membership"] == "leave"
    assert resp["rooms"][kicked]["timeline"][-1]["content"]["membership"] == "leave"
    b.send(kicked, "after the kick")
    resp = a.ss(spec)
    # A room left by the user is gone from the list; a kick stays, with nothing after it.
    assert room_ids(resp) == [kicked]
    assert resp["rooms"] == {}
    fresh = a.ss(spec, fresh=True)
    assert room_ids(fresh) == [kicked]
    assert all(e.get("content", {}).get("body") != "after the kick" for e in fresh["rooms"][kicked]["timeline"])


# ---- extensions ----------------------------------------------------------------------

def _device_id(user: Client) -> str:
    return user.ok("GET", "/account/whoami")["device_id"]


def _login_again(world, user: Client) -> Client:
    """A new device of the user (their device list changes)."""
    status, body = Http(world.srv.base_url).request("POST", V3 + "/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": user.user_id},
        "password": "secret-pw"})
    assert status == 200, body
    http = Http(world.srv.base_url, body["access_token"])
    http.user_id = user.user_id  # type: ignore[attr-defined]
    return Client(http)


def test_to_device_extension_delivers_once_with_its_own_since(new_user):
    a, b = new_user(), new_user()
    a_device = _device_id(a)
    b.ok("PUT", f"/sendToDevice/org.example.ping/{uuid.uuid4().hex}",
         {"messages": {a.user_id: {a_device: {"n": 1}}}})
    resp = a.ss({"extensions": {"to_device": {"enabled": True}}})
    td = resp["extensions"]["to_device"]
    assert [(e["type"], e["sender"], e["content"]) for e in td["events"]] == [("org.example.ping", b.user_id, {"n": 1})]
    since = td["next_batch"]
    # Acknowledged by sending its next_batch back: not delivered again.
    resp = a.ss({"extensions": {"to_device": {"enabled": True, "since": since}}})
    assert resp["extensions"]["to_device"]["events"] == []
    # Not acknowledged (a lost response): delivered again.
    b.ok("PUT", f"/sendToDevice/org.example.ping/{uuid.uuid4().hex}",
         {"messages": {a.user_id: {a_device: {"n": 2}}}})
    first = a.ss({"extensions": {"to_device": {"enabled": True, "since": since}}})
    again = a.ss({"extensions": {"to_device": {"enabled": True, "since": since}}})
    assert [e["content"] for e in first["extensions"]["to_device"]["events"]] == [{"n": 2}]
    assert [e["content"] for e in again["extensions"]["to_device"]["events"]] == [{"n": 2}]


def test_e2ee_extension_counts_and_device_lists(world, new_user):
    a, b, stranger = new_user(), new_user(), new_user()
    a_device = _device_id(a)
    a.ok("POST", "/keys/upload", {"one_time_keys": {
        f"signed_curve25519:K{i}": {"key": f"key{i}", "signatures": {}} for i in range(3)}})
    room_id = a.create_room(invite=[b.user_id])
    b.join(room_id)
    spec = {"extensions": {"e2ee": {"enabled": True}}}
    resp = a.ss(spec)
    e2ee = resp["extensions"]["e2ee"]
    assert e2ee["device_one_time_keys_count"]["signed_curve25519"] == 3
    assert e2ee["device_unused_fallback_key_types"] == []
    assert "device_lists" not in e2ee  # nothing to compare against on a new connection
    _login_again(world, b)          # b shares a room with a: a must re-query b's keys
    _login_again(world, stranger)   # shares nothing with a
    resp = a.ss(spec)
    assert resp["extensions"]["e2ee"]["device_lists"] == {"changed": [b.user_id], "left": []}
    b.ok("POST", f"/rooms/{quote(room_id)}/leave", {})
    resp = a.ss(spec)
    assert resp["extensions"]["e2ee"]["device_lists"]["left"] == [b.user_id]
    assert a_device


def test_account_data_extension_and_its_scope(new_user):
    a = new_user()
    in_list, subscribed, outside = (a.create_room(name=n) for n in ("in list", "subscribed", "outside"))
    a.send(subscribed, "x")
    a.send(outside, "x")
    a.send(in_list, "x")   # newest: the window [0, 0]
    a.account_data("org.example.global", {"g": 1})
    for room_id in (in_list, subscribed, outside):
        a.account_data("org.example.room", {"r": room_id}, room_id)
    sub = {"timeline_limit": 0, "required_state": []}
    body = {"lists": {"all": window(0, 0)}, "room_subscriptions": {subscribed: sub},
            "extensions": {"account_data": {"enabled": True}}}
    ad = a.ss(body)["extensions"]["account_data"]
    assert {e["type"] for e in ad["global"]} >= {"org.example.global"}
    assert set(ad["rooms"]) == {in_list, subscribed}
    assert ad["rooms"][in_list] == [{"type": "org.example.room", "content": {"r": in_list}}]
    # Only what changed, and only for the rooms in scope (here: the list only).
    a.account_data("org.example.global", {"g": 2})
    a.account_data("org.example.room", {"r": "changed"}, subscribed)
    a.account_data("org.example.room", {"r": "changed"}, in_list)
    body["extensions"]["account_data"]["rooms"] = []
    ad = a.ss(body)["extensions"]["account_data"]
    assert ad["global"] == [{"type": "org.example.global", "content": {"g": 2}}]
    assert set(ad["rooms"]) == {in_list}


def test_receipts_and_typing_extensions(new_user):
    a, b = new_user(), new_user()
    room_id = a.create_room(invite=[b.user_id])
    b.join(room_id)
    event_id = a.send(room_id, "read me")
    other = a.create_room(name="not in the window")
    body = {"lists": {"all": window(0, 0)}, "extensions": {"receipts": {"enabled": True},
                                                          "typing": {"enabled": True}}}
    a.send(room_id, "newest")  # room_id is the window
    first = a.ss(body)
    assert first["extensions"]["typing"]["rooms"] == {}
    b.ok("POST", f"/rooms/{quote(room_id)}/receipt/m.read/{quote(event_id)}", {})
    b.ok("PUT", f"/rooms/{quote(room_id)}/typing/{quote(b.user_id)}", {"typing": True, "timeout": 30000})
    a.ok("PUT", f"/rooms/{quote(other)}/typing/{quote(a.user_id)}", {"typing": True, "timeout": 30000})
    resp = a.ss(body)
    receipt = resp["extensions"]["receipts"]["rooms"][room_id]
    assert receipt["type"] == "m.receipt"
    assert b.user_id in receipt["content"][event_id]["m.read"]
    typing = resp["extensions"]["typing"]["rooms"]
    assert typing == {room_id: {"type": "m.typing", "content": {"user_ids": [b.user_id]}}}
    # Scoped to nothing: neither is sent.
    b.ok("PUT", f"/rooms/{quote(room_id)}/typing/{quote(b.user_id)}", {"typing": False})
    body["extensions"] = {"receipts": {"enabled": True, "lists": [], "rooms": []},
                          "typing": {"enabled": True, "lists": ["other-list"]}}
    resp = a.ss(body)
    assert resp["extensions"]["typing"]["rooms"] == {} and resp["extensions"]["receipts"]["rooms"] == {}


# ---- connections ---------------------------------------------------------------------

def test_pos_is_per_user_device_and_conn_id_and_a_retry_works(world, new_user):
    a, b = new_user(), new_user()
    _rooms_with_messages(a, 2)
    spec = {"conn_id": "main", "lists": {"all": window(0, 9)}}
    first = a.ss(spec)
    pos = first["pos"]
    second = a.ss(spec)
    # The same pos again (a retry after a lost response) is answered again.
    status, retried = a.ss_raw(spec, pos)
    assert status == 200 and retried["rooms"] == second["rooms"]
    # Another user, another device, another conn_id: unknown.
    for other, body in ((b, spec), (a, {**spec, "conn_id": "other"})):
        status, err = other.ss_raw(body, pos)
        assert (status, err["errcode"]) == (400, "M_UNKNOWN_POS")
    device2 = _login_again(world, a)
    status, err = device2.ss_raw(spec, pos)
    assert (status, err["errcode"]) == (400, "M_UNKNOWN_POS")
    for garbage in ("", "nonsense", "1/s1", "99999999999999999999/s0"):
        status, err = a.ss_raw(spec, garbage)
        assert (status, err["errcode"]) == (400, "M_UNKNOWN_POS"), garbage
    # A new connection (no pos) forgets the old one's positions.
    a.ss(spec, fresh=True)
    status, err = a.ss_raw(spec, pos)
    assert (status, err["errcode"]) == (400, "M_UNKNOWN_POS")


def test_an_unused_connection_expires(new_user):
    a = new_user()
    a.create_room(name="r")
    resp = a.ss({"lists": {"all": window(0, 0)}})
    time.sleep(TTL + 1)
    status, err = a.ss_raw({"lists": {"all": window(0, 0)}}, resp["pos"])
    assert (status, err["errcode"]) == (400, "M_UNKNOWN_POS")
    # Starting over works and sends everything again.
    assert a.ss({"lists": {"all": window(0, 0)}}, fresh=True)["rooms"]


# ---- long-polling --------------------------------------------------------------------

def _in_background(fn):
    result: dict = {}

    def run():
        t0 = time.monotonic()
        result["value"] = fn()
        result["elapsed"] = time.monotonic() - t0
    t = threading.Thread(target=run)
    t.start()
    return t, result


def test_long_poll_waits_and_is_woken(new_user):
    a, b = new_user(), new_user()
    room_id = a.create_room(invite=[b.user_id])
    b.join(room_id)
    body = {"lists": {"all": window(0, 0)}, "extensions": {"typing": {"enabled": True}}}
    a.ss(body)
    # Nothing happens: the answer comes at the timeout, with nothing in it.
    t0 = time.monotonic()
    idle = a.ss(body, timeout=1000)
    assert time.monotonic() - t0 >= 0.9
    assert idle["rooms"] == {} and idle["extensions"]["typing"]["rooms"] == {}
    # A message wakes it at once.
    t, result = _in_background(lambda: a.ss(body, timeout=20_000))
    time.sleep(0.5)
    b.send(room_id, "wake up")
    t.join(25)
    assert result["elapsed"] < 5
    assert result["value"]["rooms"][room_id]["timeline"][-1]["content"]["body"] == "wake up"
    # So does typing, through the extension.
    t, result = _in_background(lambda: a.ss(body, timeout=20_000))
    time.sleep(0.5)
    b.ok("PUT", f"/rooms/{quote(room_id)}/typing/{quote(b.user_id)}", {"typing": True, "timeout": 30000})
    t.join(25)
    assert result["elapsed"] < 5
    assert result["value"]["extensions"]["typing"]["rooms"][room_id]["content"]["user_ids"] == [b.user_id]


def test_long_poll_ignores_what_the_connection_does_not_ask_for(new_user):
    a, b = new_user(), new_user()
    room_id = a.create_room(invite=[b.user_id])
    b.join(room_id)
    body = {"lists": {"all": window(0, 0)}}  # no typing extension
    a.ss(body)
    t, result = _in_background(lambda: a.ss(body, timeout=1500))
    time.sleep(0.3)
    b.ok("PUT", f"/rooms/{quote(room_id)}/typing/{quote(b.user_id)}", {"typing": True, "timeout": 30000})
    t.join(10)
    assert result["elapsed"] >= 1.4 and result["value"]["rooms"] == {}


# ---- bad input -----------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    {"conn_id": 5},
    {"lists": []},
    {"lists": {"a": "list"}},
    {"lists": {"a": {"ranges": [[0, 5]], "timeline_limit": 1}}},              # no required_state
    {"lists": {"a": {"ranges": [[0, 5]], "required_state": []}}},             # no timeline_limit
    {"lists": {"a": {"ranges": [[5, 0]], "timeline_limit": 1, "required_state": []}}},
    {"lists": {"a": {"ranges": [[0]], "timeline_limit": 1, "required_state": []}}},
    {"lists": {"a": {"ranges": [[-1, 3]], "timeline_limit": 1, "required_state": []}}},
    {"lists": {"a": {"ranges": [["0", "3"]], "timeline_limit": 1, "required_state": []}}},
    {"lists": {"a": {"ranges": "0-3", "timeline_limit": 1, "required_state": []}}},
    {"lists": {"a": {"ranges": [[0, 3]], "timeline_limit": -1, "required_state": []}}},
    {"lists": {"a": {"ranges": [[0, 3]], "timeline_limit": 1001, "required_state": []}}},
    {"lists": {"a": {"ranges": [[0, 3]], "timeline_limit": True, "required_state": []}}},
    {"lists": {"a": {"ranges": [[0, 3]], "timeline_limit": 1, "required_state": [["m.room.name"]]}}},
    {"lists": {"a": {"ranges": [[0, 3]], "timeline_limit": 1, "required_state": [["a", 1]]}}},
    {"lists": {"a": {"ranges": [[0, 3]], "timeline_limit": 1, "required_state": {"include": []}}}},
    {"lists": {"a": {"ranges": [[0, 3]], "timeline_limit": 1, "required_state": [], "filters": []}}},
    {"lists": {"a": {"ranges": [[0, 3]], "timeline_limit": 1, "required_state": [],
                     "filters": {"is_dm": "yes"}}}},
    {"lists": {"a": {"ranges": [[0, 3]], "timeline_limit": 1, "required_state": [],
                     "filters": {"spaces": "!space:x"}}}},
    {"lists": {"a": {"ranges": [[0, 3]], "timeline_limit": 1, "required_state": [],
                     "filters": {"room_types": [1]}}}},
    {"lists": {"x" * 65: {"ranges": [[0, 3]], "timeline_limit": 1, "required_state": []}}},
    {"lists": {str(i): {"timeline_limit": 1, "required_state": []} for i in range(101)}},
    {"room_subscriptions": {"!r:x": {"timeline_limit": 1}}},
    {"room_subscriptions": ["!r:x"]},
    {"extensions": {"to_device": {"enabled": True, "since": "abc"}}},
    {"extensions": {"to_device": {"enabled": True, "since": 5}}},
    {"extensions": {"to_device": {"enabled": "yes"}}},
    {"extensions": {"typing": {"enabled": True, "lists": "all"}}},
    {"extensions": []},
])
def test_malformed_bodies_are_bad_json(new_user, body):
    a = new_user()
    status, err = a.ss_raw(body)
    assert (status, err["errcode"]) == (400, "M_BAD_JSON"), (body, err)


def test_unparsable_and_odd_requests(world, new_user):
    a = new_user()
    status, err = a.ss_raw(None, raw=b"{not json")
    assert (status, err["errcode"]) == (400, "M_NOT_JSON")
    status, err = a.ss_raw(None, raw=b"[]")
    assert (status, err["errcode"]) == (400, "M_BAD_JSON")
    status, err = a.ss_raw({}, timeout="soon")  # type: ignore[arg-type]
    assert (status, err["errcode"]) == (400, "M_INVALID_PARAM")
    status, err = Http(world.srv.base_url).request("POST", SS, {})
    assert (status, err["errcode"]) == (401, "M_MISSING_TOKEN")
    status, _ = a.http.request("GET", SS)
    assert status in (404, 405)  # POST only, as Synapse
    # Unknown extensions and fields are ignored; an empty body is a valid request.
    status, resp = a.ss_raw({"extensions": {"org.example.future": {"enabled": True}}, "novel": 1,
                             "unsubscribe_rooms": ["!x:y"]})
    assert status == 200 and resp["rooms"] == {} and resp["lists"] == {}
    status, resp = a.ss_raw({"lists": {"a": {"slow_get_all_rooms": True, "ranges": [[9, 1]],
                                             "timeline_limit": 0, "required_state": []}}})
    assert status == 200
    status, resp = a.ss_raw({"lists": {"a": window(0, 2**40)}})
    assert status == 200 and resp["lists"]["a"]["count"] == 0


# ---- tenancy -------------------------------------------------------------------------

def test_another_tenants_rooms_users_and_devices_never_show(world, new_user):
    alice, carol = new_user("acme"), new_user("acme")
    bob = new_user("globex")
    acme_room = alice.create_room(name="acme", invite=[carol.user_id])
    carol.join(acme_room)
    globex_room = bob.create_room(name="globex secret")
    globex_space = bob.create_room(name="globex space", creation_content={"type": "m.space"})
    bob.put_state(globex_space, "m.space.child", {"via": ["test.local"]}, acme_room)
    sub = {"timeline_limit": 10, "required_state": [["*", "*"]]}
    body = {"lists": {"all": window(0, 99), "space": window(0, 99, filters={"spaces": [globex_space]})},
            "room_subscriptions": {globex_room: sub, globex_space: sub},
            "extensions": {"e2ee": {"enabled": True}, "typing": {"enabled": True},
                           "receipts": {"enabled": True}, "account_data": {"enabled": True}}}
    resp = alice.ss(body)
    assert room_ids(resp) == [acme_room] and room_ids(resp, "space") == []
    assert set(resp["rooms"]) == {acme_room}
    # bob's activity (a new device, typing, messages in his rooms) reaches alice nowhere.
    _login_again(world, bob)
    bob.ok("PUT", f"/rooms/{quote(globex_room)}/typing/{quote(bob.user_id)}", {"typing": True, "timeout": 30000})
    bob.send(globex_room, "globex only")
    _login_again(world, carol)
    resp = alice.ss(body)
    assert resp["extensions"]["e2ee"]["device_lists"] == {"changed": [carol.user_id], "left": []}
    assert resp["rooms"] == {} and resp["extensions"]["typing"]["rooms"] == {}
    text = str(resp)
    assert bob.user_id not in text and globex_room not in text and globex_space not in text
