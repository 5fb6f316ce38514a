"""mautrix-python, a real application-service framework, against our server: it receives
transactions for its namespace, and sends as masqueraded users through its intent API."""
from __future__ import annotations

import asyncio
import secrets

import pytest
import yaml
from mautrix.appservice import AppService
from mautrix.types import EventType, MessageEvent

from tests.server_harness import Http, ServerProcess, free_port


@pytest.fixture(scope="module")
def as_server(tmp_path_factory):
    d = tmp_path_factory.mktemp("as-hs")
    as_port = free_port()
    reg = {
        "id": "mautrix-test", "url": f"http://127.0.0.1:{as_port}",
        "as_token": secrets.token_hex(16), "hs_token": secrets.token_hex(16),
        "sender_localpart": "_mx_bot", "rate_limited": False,
        "namespaces": {"users": [{"exclusive": True, "regex": "@_mx_.*:test\\.local"}],
                       "aliases": [{"exclusive": True, "regex": "#_mx_.*:test\\.local"}], "rooms": []},
    }
    (d / "registration.yaml").write_text(yaml.safe_dump(reg))
    srv = ServerProcess(d, extra_config=f"app_service_config_files: [{d / 'registration.yaml'}]\n")
    srv.start()
    yield srv, reg, as_port
    srv.stop()
    srv.stop_postgres()


def test_mautrix_receives_and_sends(as_server):
    srv, reg, as_port = as_server

    async def main():
        received: list[MessageEvent] = []
        arrived = asyncio.Event()
        az = AppService(server=srv.base_url, domain="test.local", as_token=reg["as_token"],
                        hs_token=reg["hs_token"], bot_localpart="_mx_bot", id=reg["id"])

        @az.matrix_event_handler
        async def on_event(evt) -> None:
            if evt.type == EventType.ROOM_MESSAGE:
                received.append(evt)
                arrived.set()

        await az.start(host="127.0.0.1", port=as_port)
        try:
            assert await az.ping_self("ping-1") >= 0  # the homeserver reached the service
            # A plain user makes a room and invites a bridged (namespaced) user.
            http = Http(srv.base_url)
            alice = http.register("alice")
            http.token = alice["access_token"]
            ghost = az.intent.user("@_mx_bob:test.local")
            await ghost.ensure_registered()
            _, room = http.request("POST", "/_matrix/client/v3/createRoom",
                                   {"invite": ["@_mx_bob:test.local"], "name": "bridged"})
            room_id = room["room_id"]
            await ghost.join_room(room_id)
            # The service receives the human's message through a transaction...
            _, sent = http.request("PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t1",
                                   {"msgtype": "m.text", "body": "hello bridge"})
            await asyncio.wait_for(arrived.wait(), 10)
            assert [e.event_id for e in received] == [sent["event_id"]]
            assert received[0].content.body == "hello bridge"
            # ...and answers as the masqueraded user through its intent API.
            reply_id = await ghost.send_text(room_id, "hello human")
            _, page = http.request("GET", f"/_matrix/client/v3/rooms/{room_id}/messages?dir=b&limit=1")
            assert page["chunk"][0]["event_id"] == reply_id
            assert page["chunk"][0]["sender"] == "@_mx_bob:test.local"
            assert page["chunk"][0]["content"]["body"] == "hello human"
            # Its own message comes back to it too (sender in its namespace): exactly once.
            await asyncio.sleep(1.0)
            bodies = [e.content.body for e in received]
            assert bodies.count("hello bridge") == 1 and bodies.count("hello human") == 1
        finally:
            await az.stop()

    asyncio.run(main())


def test_exclusive_namespace_refused_to_others(as_server):
    srv, reg, _ = as_server
    http = Http(srv.base_url)
    status, body = http.request("POST", "/_matrix/client/v3/register", {
        "username": "_mx_squatter", "password": "pw", "auth": {"type": "m.login.dummy"}})
    assert status == 400 and body["errcode"] == "M_EXCLUSIVE"
    # The service itself may not register outside its namespace...
    status, body = http.request("POST", "/_matrix/client/v3/register",
                                {"type": "m.login.application_service", "username": "outsider"},
                                token=reg["as_token"])
    assert status == 400 and body["errcode"] == "M_EXCLUSIVE"
    # ...nor masquerade as a user outside it.
    user = http.register("plainuser")
    status, body = http.request("GET", f"/_matrix/client/v3/account/whoami?user_id={user['user_id']}",
                                token=reg["as_token"])
    assert status == 403
    # An alias in the exclusive namespace is the service's alone.
    http.token = user["access_token"]
    _, room = http.request("POST", "/_matrix/client/v3/createRoom", {})
    status, body = http.request("PUT", "/_matrix/client/v3/directory/room/%23_mx_taken:test.local",
                                {"room_id": room["room_id"]})
    assert status == 400 and body["errcode"] == "M_EXCLUSIVE"


def test_appservice_login_and_timestamp(as_server):
    srv, reg, _ = as_server
    http = Http(srv.base_url)
    status, body = http.request("POST", "/_matrix/client/v3/register",
                                {"type": "m.login.application_service", "username": "_mx_carol",
                                 "inhibit_login": True}, token=reg["as_token"])
    assert status == 200 and body == {"user_id": "@_mx_carol:test.local", "home_server": "test.local"}
    status, body = http.request("POST", "/_matrix/client/v3/login", {
        "type": "m.login.application_service", "identifier": {"type": "m.id.user", "user": "_mx_carol"}},
        token=reg["as_token"])
    assert status == 200 and body["user_id"] == "@_mx_carol:test.local"
    carol = Http(srv.base_url, body["access_token"])
    _, room = carol.request("POST", "/_matrix/client/v3/createRoom", {})
    # `ts` sets origin_server_ts for application services (bridged history)...
    q = "user_id=@_mx_carol:test.local&ts=1500000000000"
    status, sent = http.request("PUT", f"/_matrix/client/v3/rooms/{room['room_id']}/send/m.room.message/h1?{q}",
                                {"msgtype": "m.text", "body": "old"}, token=reg["as_token"])
    assert status == 200
    _, ev = carol.request("GET", f"/_matrix/client/v3/rooms/{room['room_id']}/event/{sent['event_id']}")
    assert ev["origin_server_ts"] == 1500000000000
    # ...and is ignored for ordinary users.
    _, sent2 = carol.request("PUT", f"/_matrix/client/v3/rooms/{room['room_id']}/send/m.room.message/h2?ts=1",
                             {"msgtype": "m.text", "body": "now"})
    _, ev2 = carol.request("GET", f"/_matrix/client/v3/rooms/{room['room_id']}/event/{sent2['event_id']}")
    assert ev2["origin_server_ts"] > 1500000000000


def test_appservice_deactivates_its_users_without_uia(as_server):
    """As in Synapse: a service holds no password for its users, so /account/deactivate
    asks it for none; a user with a password still gets the UIA challenge."""
    srv, reg, _ = as_server
    http = Http(srv.base_url)
    status, _ = http.request("POST", "/_matrix/client/v3/register",
                             {"type": "m.login.application_service", "username": "_mx_gone",
                              "inhibit_login": True}, token=reg["as_token"])
    assert status == 200
    status, body = http.request("POST", "/_matrix/client/v3/account/deactivate?user_id=@_mx_gone:test.local",
                                {"erase": True}, token=reg["as_token"])
    assert status == 200, body
    status, body = http.request("GET", "/_matrix/client/v3/account/whoami?user_id=@_mx_gone:test.local",
                                token=reg["as_token"])
    assert status == 403  # deactivated: the service cannot act as it any more
    person = Http(srv.base_url, http.register(f"person{secrets.token_hex(4)}")["access_token"])
    status, body = person.request("POST", "/_matrix/client/v3/account/deactivate", {})
    assert status == 401 and "flows" in body
