"""A tiny blocking Matrix client over the raw Http helper, for /sync behaviour tests that
need exact control of the JSON (tokens, filters, sections)."""
from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import quote

from tests.server_harness import Http

V3 = "/_matrix/client/v3"


class User:
    def __init__(self, base_url: str, login: dict) -> None:
        self.user_id: str = login["user_id"]
        self.device_id: str = login["device_id"]
        self.http = Http(base_url, login["access_token"])
        self.base_url = base_url

    @classmethod
    def register(cls, base_url: str, name: str) -> "User":
        return cls(base_url, Http(base_url).register(name, "pw-" + name))

    def login_again(self) -> "User":
        """A second device of the same user."""
        localpart = self.user_id[1:].split(":")[0]
        status, body = Http(self.base_url).request("POST", V3 + "/login", {
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": localpart},
            "password": "pw-" + localpart})
        assert status == 200, body
        return User(self.base_url, body)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return self.http.request(method, V3 + path, body)

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, data = self.call(method, path, body)
        assert status == 200, (method, path, status, data)
        return data

    def create_room(self, **body: Any) -> str:
        return self.ok("POST", "/createRoom", body)["room_id"]

    def join(self, room_id: str) -> None:
        self.ok("POST", f"/rooms/{quote(room_id)}/join", {})

    def leave(self, room_id: str) -> None:
        self.ok("POST", f"/rooms/{quote(room_id)}/leave", {})

    def invite(self, room_id: str, user_id: str) -> None:
        self.ok("POST", f"/rooms/{quote(room_id)}/invite", {"user_id": user_id})

    def send(self, room_id: str, body: str) -> str:
        return self.ok("PUT", f"/rooms/{quote(room_id)}/send/m.room.message/{uuid.uuid4().hex}",
                       {"msgtype": "m.text", "body": body})["event_id"]

    def put_state(self, room_id: str, event_type: str, content: dict, state_key: str = "") -> str:
        return self.ok("PUT", f"/rooms/{quote(room_id)}/state/{event_type}/{quote(state_key)}",
                       content)["event_id"]

    def set_displayname(self, room_id: str, name: str) -> str:
        """A join -> join member event that changes only the display name."""
        return self.put_state(room_id, "m.room.member", {"membership": "join", "displayname": name},
                              self.user_id)

    def put_account_data(self, data_type: str, content: dict) -> None:
        self.ok("PUT", f"/user/{quote(self.user_id)}/account_data/{data_type}", content)

    def sync(self, since: str | None = None, filt: dict | None = None, timeout: int = 0,
             **params: str) -> dict:
        query = {"timeout": str(timeout), **params}
        if since:
            query["since"] = since
        if filt is not None:
            query["filter"] = json.dumps(filt)
        qs = "&".join(f"{k}={quote(v)}" for k, v in query.items())
        return self.ok("GET", f"/sync?{qs}")


def timeline_ids(room: dict) -> list[str]:
    return [e["event_id"] for e in room["timeline"]["events"]]


def member_keys(events: list[dict]) -> set[str]:
    return {e["state_key"] for e in events if e["type"] == "m.room.member"}
