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
