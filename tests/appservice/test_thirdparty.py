"""Third-party networks bridged by application services: /thirdparty/* answered from the
services' registered protocols through the AS API, results into another tenant left
out, and rooms published in a network's own directory
(PUT /directory/list/appservice/{networkId}/{roomId}, publicRooms with
third_party_instance_id / include_all_networks)."""
from __future__ import annotations

import secrets
import time
import urllib.parse

import pytest
import yaml

from tests.json_receiver import Call, JsonReceiver
from tests.server_harness import Http, ServerProcess, free_port

V3 = "/_matrix/client/v3"
SERVER = "test.local"


class Bridge:
    """A service bridging the "chat" protocol: one network, one channel, one user."""

    def __init__(self, hs_token: str, network: str, prefix: str) -> None:
        self.queries: list[tuple[str, dict]] = []
        alias, user = f"#{prefix}lobby:{SERVER}", f"@{prefix}bob:{SERVER}"
        answers = {
            "/_matrix/app/v1/thirdparty/protocol/chat": {
                "user_fields": ["nick"], "location_fields": ["channel"], "icon": "mxc://example.org/chat",
                "field_types": {"nick": {"regexp": ".*", "placeholder": "nick"},
                                "channel": {"regexp": ".*", "placeholder": "#channel"}},
                "instances": [{"desc": f"{network} network", "fields": {"network": network}, "network_id": network}]},
            "/_matrix/app/v1/thirdparty/location/chat":
                [{"alias": alias, "protocol": "chat", "fields": {"channel": "lobby"}}],
            "/_matrix/app/v1/thirdparty/user/chat":
                [{"userid": user, "protocol": "chat", "fields": {"nick": "bob"}}],
            "/_matrix/app/v1/thirdparty/location":
                [{"alias": alias, "protocol": "chat", "fields": {"channel": "lobby"}}],
            "/_matrix/app/v1/thirdparty/user":
                [{"userid": user, "protocol": "chat", "fields": {"nick": "bob"}}],
        }
        self._answers, self._alias, self._user, self._hs_token = answers, alias, user, hs_token
        self._http = JsonReceiver(self._answer).start()
        self.port = self._http.port

    def _answer(self, call: Call) -> tuple[int, object]:
        if call.method == "PUT":
            return 200, {}
        if not call.bears(self._hs_token):
            return 403, {"errcode": "M_FORBIDDEN"}
        self.queries.append((call.path, call.query))
        # Looking up anything but our channel / nick / alias / user finds nothing.
        if call.query.keys() - {"access_token"} and not (
                {"lobby", "bob", self._alias, self._user} & set(call.query.values())):
            return 200, []
        if call.path in self._answers:
            return 200, self._answers[call.path]
        return 404, {"errcode": "M_UNRECOGNIZED"}

    def close(self) -> None:
        self._http.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("thirdparty")
    regs, bridges, files = {}, {}, []
    for as_id, network, prefix in (("chatbridge", "main", "_tp_"), ("chatbridge2", "side", "_tq_")):
        hs_token = secrets.token_hex(16)
        bridges[as_id] = Bridge(hs_token, network, prefix)
        regs[as_id] = {"id": as_id, "url": f"http://127.0.0.1:{bridges[as_id].port}",
                       "as_token": secrets.token_hex(16), "hs_token": hs_token, "sender_localpart": f"{prefix}bot",
                       "protocols": ["chat"],
                       "namespaces": {"users": [{"exclusive": True, "regex": f"@{prefix}.*"}],
                                      "aliases": [{"exclusive": True, "regex": f"#{prefix}.*"}], "rooms": []}}
    # A service that is down: its protocol is simply missing, and nobody waits long for it.
    regs["dead"] = {"id": "dead", "url": f"http://127.0.0.1:{free_port()}", "as_token": secrets.token_hex(16),
                    "hs_token": secrets.token_hex(16), "sender_localpart": "_dead_bot", "protocols": ["gone"],
                    "namespaces": {"users": [{"exclusive": True, "regex": "@_dead_.*"}]}}
    for as_id, reg in regs.items():
        (d / f"{as_id}.yaml").write_text(yaml.safe_dump(reg))
        files.append(str(d / f"{as_id}.yaml"))
    srv = ServerProcess(d / "hs", extra_config=f"app_service_config_files: [{', '.join(files)}]\n")
    srv.start()
    yield srv, regs, bridges
    for b in bridges.values():
        b.close()
    srv.stop()
    srv.stop_postgres()


def _as_user(srv: ServerProcess, reg: dict, localpart: str, tenant: str | None) -> Http:
    """A user in the service's namespace, with a tenant set by the service, acted as."""
    service = Http(srv.base_url, reg["as_token"])
    status, body = service.request("POST", f"{V3}/register", {"type": "m.login.application_service",
                                                              "username": localpart, "inhibit_login": True})
    assert status == 200, body
    user_id = body["user_id"]
    if tenant:
        status, body = service.request("PUT", f"/_homeserver/admin/v1/users/{user_id}/tenant", {"tenant_id": tenant})
        assert status == 200, body

    class Acting(Http):
        def request(self, method, path, body=None, **kw):
            sep = "&" if "?" in path else "?"
            return super().request(method, f"{path}{sep}user_id={urllib.parse.quote(user_id)}", body, **kw)

    acting = Acting(srv.base_url, reg["as_token"])
    acting.user_id = user_id
    return acting


def test_protocols_come_from_the_services(world):
    srv, regs, _ = world
    human = Http(srv.base_url)
    human.token = human.register("tphuman")["access_token"]
    started = time.time()
    status, protocols = human.request("GET", f"{V3}/thirdparty/protocols")
    assert status == 200, protocols
    assert time.time() - started < 8  # the dead service did not stall the answer for long
    assert set(protocols) == {"chat"}
    chat = protocols["chat"]
    assert chat["user_fields"] == ["nick"] and chat["location_fields"] == ["channel"]
    # Both services' instances, each with a homeserver-wide instance id.
    assert sorted((i["network_id"], i["instance_id"]) for i in chat["instances"]) == [
        ("main", "chatbridge|main"), ("side", "chatbridge2|side")]
    assert human.request("GET", f"{V3}/thirdparty/protocol/chat") == (200, chat)
    status, body = human.request("GET", f"{V3}/thirdparty/protocol/gone")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    assert Http(srv.base_url).request("GET", f"{V3}/thirdparty/protocols")[0] == 401


def test_lookups_pass_fields_and_respect_tenants(world):
    srv, regs, bridges = world
    reg = regs["chatbridge"]
    anna = _as_user(srv, reg, "_tp_anna", "acme")  # creates the portal room: an acme room
    status, room = anna.request("POST", f"{V3}/createRoom", {"room_alias_name": "_tp_lobby", "preset": "public_chat"})
    assert status == 200, room
    carl = _as_user(srv, reg, "_tp_carl", "acme")
    _as_user(srv, reg, "_tp_bob", "acme")
    stranger = Http(srv.base_url)  # no tenant: another organization
    stranger.token = stranger.register("tpstranger")["access_token"]

    status, found = carl.request("GET", f"{V3}/thirdparty/location/chat?channel=lobby")
    assert status == 200, found
    assert {r["alias"] for r in found} == {f"#_tp_lobby:{SERVER}", f"#_tq_lobby:{SERVER}"}  # both bridges
    path, query = next((p, q) for p, q in bridges["chatbridge"].queries if p.endswith("/location/chat"))
    assert query["channel"] == "lobby" and query["access_token"] == reg["hs_token"]
    status, found = carl.request("GET", f"{V3}/thirdparty/user/chat?nick=bob")
    assert status == 200 and f"@_tp_bob:{SERVER}" in {r["userid"] for r in found}
    alias = urllib.parse.quote(f"#_tp_lobby:{SERVER}")
    status, found = carl.request("GET", f"{V3}/thirdparty/location?alias={alias}")
    assert status == 200 and found[0]["fields"] == {"channel": "lobby"}
    status, found = carl.request("GET", f"{V3}/thirdparty/user?userid={urllib.parse.quote(f'@_tp_bob:{SERVER}')}")
    assert status == 200 and found[0]["fields"] == {"nick": "bob"}

    # Another organization sees the acme room and user exactly as things that do not exist.
    nothing = stranger.request("GET", f"{V3}/thirdparty/location?alias={urllib.parse.quote('#nothing:' + SERVER)}")
    assert nothing[0] == 404 and nothing[1]["errcode"] == "M_NOT_FOUND"
    assert stranger.request("GET", f"{V3}/thirdparty/location?alias={alias}") == nothing
    assert stranger.request("GET", f"{V3}/thirdparty/user?userid={urllib.parse.quote(f'@_tp_bob:{SERVER}')}") \
        == stranger.request("GET", f"{V3}/thirdparty/user?userid={urllib.parse.quote('@nobody:' + SERVER)}")
    status, found = stranger.request("GET", f"{V3}/thirdparty/location/chat?channel=lobby")
    assert status == 200 and {r["alias"] for r in found} == {f"#_tq_lobby:{SERVER}"}  # not yet created: no tenant
    status, body = stranger.request("GET", f"{V3}/thirdparty/location/irc?channel=lobby")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    status, body = stranger.request("GET", f"{V3}/thirdparty/user")
    assert status == 400 and body["errcode"] == "M_MISSING_PARAM"


def test_rooms_published_in_a_network_directory(world):
    srv, regs, _ = world
    reg = regs["chatbridge"]
    service = Http(srv.base_url, reg["as_token"])
    human = Http(srv.base_url)
    human.token = human.register("tpdir")["access_token"]
    _, portal = service.request("POST", f"{V3}/createRoom", {"preset": "public_chat", "name": "portal"})
    _, main = human.request("POST", f"{V3}/createRoom", {"preset": "public_chat", "visibility": "public", "name": "main"})
    portal_id, main_id = portal["room_id"], main["room_id"]
    path = f"{V3}/directory/list/appservice/main/{urllib.parse.quote(portal_id)}"
    assert service.request("PUT", path, {"visibility": "public"}) == (200, {})

    def listed(body=None, query=""):
        if body is None:
            status, page = human.request("GET", f"{V3}/publicRooms{query}")
        else:
            status, page = human.request("POST", f"{V3}/publicRooms", body)
        assert status == 200, page
        return {c["room_id"] for c in page["chunk"]}

    assert main_id in listed({}) and portal_id not in listed({})
    assert listed({"third_party_instance_id": "chatbridge|main"}) == {portal_id}
    assert listed(query="?third_party_instance_id=chatbridge%7Cmain") == {portal_id}
    assert listed({"third_party_instance_id": "chatbridge2|side"}) == set()
    assert listed({"third_party_instance_id": "nobody|main"}) == set()
    assert {main_id, portal_id} <= listed({"include_all_networks": True})
    assert {main_id, portal_id} <= listed(query="?include_all_networks=true")
    status, body = human.request("POST", f"{V3}/publicRooms",
                                 {"include_all_networks": True, "third_party_instance_id": "chatbridge|main"})
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"

    # Only application services may publish there; bad input and unknown rooms are refused.
    status, body = human.request("PUT", path, {"visibility": "public"})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = service.request("PUT", path, {"visibility": "shown"})
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    status, body = service.request("PUT", f"{V3}/directory/list/appservice/main/%21nope%3A{SERVER}",
                                   {"visibility": "public"})
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    assert service.request("PUT", path, {"visibility": "private"}) == (200, {})
    assert listed({"third_party_instance_id": "chatbridge|main"}) == set()
