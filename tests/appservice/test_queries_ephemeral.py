"""Homeserver -> application service calls beyond transactions: lazy provisioning through
user and alias queries, and ephemeral data (typing, receipts) for services that ask."""
from __future__ import annotations

import json
import secrets
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from tests.server_harness import Http, ServerProcess, free_port

V3 = "/_matrix/client/v3"


class LazyService:
    """Creates users and aliases in its namespace when the homeserver asks about them, and
    records the ephemeral events of its transactions."""

    def __init__(self, port: int, reg: dict, hs_url: str) -> None:
        self.reg, self.hs = reg, Http(hs_url, reg["as_token"])
        self.ephemeral: list[dict] = []
        self.user_queries: list[str] = []
        self.alias_queries: list[str] = []
        self.room_for_alias: str | None = None
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _reply(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.headers.get("Authorization") != f"Bearer {reg['hs_token']}":
                    return self._reply(403, {"errcode": "M_FORBIDDEN"})
                path = urllib.parse.unquote(self.path.split("?")[0])
                if path.startswith("/_matrix/app/v1/users/"):
                    user_id = path.rsplit("/", 1)[1]
                    service.user_queries.append(user_id)
                    local = user_id[1:].split(":")[0]
                    service.hs.request("POST", f"{V3}/register", {
                        "type": "m.login.application_service", "username": local, "inhibit_login": True})
                    return self._reply(200, {})
                if path.startswith("/_matrix/app/v1/rooms/"):
                    alias = path.rsplit("/", 1)[1]
                    service.alias_queries.append(alias)
                    _, room = service.hs.request("POST", f"{V3}/createRoom", {
                        "preset": "public_chat", "room_alias_name": alias[1:].split(":")[0]})
                    service.room_for_alias = room.get("room_id")
                    return self._reply(200, {})
                self._reply(404, {"errcode": "M_UNRECOGNIZED"})

            def do_PUT(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                service.ephemeral.extend(body.get("ephemeral", []))
                self._reply(200, {})

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("lazy")
    port = free_port()
    reg = {"id": "lazy", "url": f"http://127.0.0.1:{port}", "as_token": secrets.token_hex(16),
           "hs_token": secrets.token_hex(16), "sender_localpart": "_lazy_bot", "receive_ephemeral": True,
           "namespaces": {"users": [{"exclusive": True, "regex": "@_lazy_.*"}],
                          "aliases": [{"exclusive": True, "regex": "#_lazy_.*"}], "rooms": []}}
    (d / "reg.yaml").write_text(yaml.safe_dump(reg))
    srv = ServerProcess(d / "hs", extra_config=f"app_service_config_files: [{d / 'reg.yaml'}]\n")
    srv.start()
    service = LazyService(port, reg, srv.base_url)
    yield srv, reg, service
    service.close()
    srv.stop()
    srv.stop_postgres()


def test_unknown_user_and_alias_are_provisioned_on_demand(setup):
    srv, reg, service = setup
    human = Http(srv.base_url)
    human.token = human.register("human")["access_token"]
    _, room = human.request("POST", f"{V3}/createRoom", {})
    status, body = human.request("POST", f"{V3}/rooms/{room['room_id']}/invite", {"user_id": "@_lazy_ghost:test.local"})
    assert status == 200, body
    assert service.user_queries == ["@_lazy_ghost:test.local"]
    # An unknown user outside every namespace is simply unknown: the spec's 403 for invites.
    status, body = human.request("POST", f"{V3}/rooms/{room['room_id']}/invite", {"user_id": "@nobody:test.local"})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = human.request("POST", f"{V3}/join/%23_lazy_lobby:test.local", {})
    assert status == 200, body
    assert service.alias_queries == ["#_lazy_lobby:test.local"] and body["room_id"] == service.room_for_alias


def test_typing_and_receipts_reach_a_service_that_asks(setup):
    srv, reg, service = setup
    human = Http(srv.base_url)
    me = human.register("typist")
    human.token = me["access_token"]
    bot = Http(srv.base_url, reg["as_token"])
    _, room = human.request("POST", f"{V3}/createRoom", {"invite": ["@_lazy_bot:test.local"]})
    room_id = room["room_id"]
    assert bot.request("POST", f"{V3}/rooms/{room_id}/join", {})[0] == 200
    human.request("PUT", f"{V3}/rooms/{room_id}/typing/{me['user_id']}", {"typing": True, "timeout": 10000})
    _, sent = human.request("PUT", f"{V3}/rooms/{room_id}/send/m.room.message/e1", {"msgtype": "m.text", "body": "x"})
    human.request("POST", f"{V3}/rooms/{room_id}/receipt/m.read/{sent['event_id']}", {})
    human.request("POST", f"{V3}/rooms/{room_id}/receipt/m.read.private/{sent['event_id']}", {})
    deadline = time.time() + 10
    while time.time() < deadline:
        types = {(e["type"], e.get("room_id")) for e in service.ephemeral}
        if {("m.typing", room_id), ("m.receipt", room_id)} <= types:
            break
        time.sleep(0.1)
    typing = [e for e in service.ephemeral if e["type"] == "m.typing" and e["room_id"] == room_id]
    assert typing and me["user_id"] in typing[0]["content"]["user_ids"]
    receipts = [e for e in service.ephemeral if e["type"] == "m.receipt" and e["room_id"] == room_id]
    assert any("m.read" in r["content"].get(sent["event_id"], {}) for r in receipts)
    # a private receipt of a user outside the namespace is not the service's business
    assert not any("m.read.private" in r["content"].get(sent["event_id"], {}) for r in receipts)
