"""Guest access (the spec's "Guest access" module), off by default: guests register without
credentials, use only the guest endpoints, join only rooms whose m.room.guest_access is
can_join (and that belong to no tenant), leave rooms that stop admitting them, and can
upgrade to a full account keeping their user id. The business case: a customer without
an account joins a support room with matrix-nio."""
from __future__ import annotations

import asyncio
import time
import urllib.parse

from nio import AsyncClient, JoinError, JoinResponse, RoomCreateError, RoomMessagesResponse, RoomSendResponse

from tests.server_harness import Http, ServerProcess, new_user
from tests.tenant_world import create_room, module_world

V3 = "/_matrix/client/v3"
CAN_JOIN = {"type": "m.room.guest_access", "content": {"guest_access": "can_join"}}


world, srv, admin = module_world("guests", "guest_access:\n  enabled: true\n")

_n = iter(range(10**6))


def _user(srv: ServerProcess, name: str) -> Http:
    return new_user(srv.base_url, f"{name}{next(_n)}")


def _guest(srv: ServerProcess, body: dict | None = None) -> Http:
    http = Http(srv.base_url)
    status, me = http.request("POST", f"{V3}/register?kind=guest", body or {})
    assert status == 200, me
    http.token, http.user_id, http.device_id = me["access_token"], me["user_id"], me["device_id"]
    return http


def _room(owner: Http, guests: bool, **body) -> str:
    body.setdefault("preset", "public_chat")
    if guests:
        body["initial_state"] = body.get("initial_state", []) + [CAN_JOIN]
    return create_room(owner, **body)


def test_off_by_default(server):
    status, body = Http(server.base_url).request("POST", f"{V3}/register?kind=guest", {})
    assert status == 403 and body["errcode"] == "M_GUEST_ACCESS_FORBIDDEN"


def test_customer_joins_a_support_room_with_matrix_nio(srv):
    agent = _user(srv, "agent")
    support = _room(agent, True, name="Support", room_alias_name="support")
    internal = _room(agent, False, name="Internal")  # public, but not for guests
    guest = _guest(srv)  # the customer: no account, no password

    async def customer():
        client = AsyncClient(srv.base_url, guest.user_id, device_id=guest.device_id)
        client.access_token, client.user_id = guest.token, guest.user_id
        try:
            joined = await client.join("#support:test.local")
            assert isinstance(joined, JoinResponse) and joined.room_id == support, joined
            sent = await client.room_send(support, "m.room.message", {"msgtype": "m.text", "body": "my order is late"})
            assert isinstance(sent, RoomSendResponse), sent
            agent.request("PUT", f"{V3}/rooms/{support}/send/m.room.message/r1",
                          {"msgtype": "m.text", "body": "we are on it"})
            sync = await client.sync(timeout=5000)
            bodies = [e.body for e in sync.rooms.join[support].timeline.events if hasattr(e, "body")]
            assert {"my order is late", "we are on it"} <= set(bodies), bodies
            page = await client.room_messages(support, start="", limit=10)
            assert isinstance(page, RoomMessagesResponse), page
            assert {"my order is late", "we are on it"} <= {getattr(e, "body", None) for e in page.chunk}
            # Not a room for guests, and not an endpoint for guests.
            refused = await client.join(internal)
            assert isinstance(refused, JoinError) and refused.status_code == "M_FORBIDDEN", refused
            created = await client.room_create(name="mine")
            assert isinstance(created, RoomCreateError) and created.status_code == "M_GUEST_ACCESS_FORBIDDEN", created
        finally:
            await client.close()

    asyncio.run(customer())
    status, who = guest.request("GET", f"{V3}/account/whoami")
    assert status == 200 and who["is_guest"] is True and who["user_id"] == guest.user_id


def test_guest_registration_ignores_chosen_ids(srv):
    guest = _guest(srv, {"username": "chosen", "device_id": "MYDEVICE", "password": "x",
                         "initial_device_display_name": "Kiosk"})
    assert guest.user_id != "@chosen:test.local" and guest.device_id != "MYDEVICE"
    status, devices = guest.request("GET", f"{V3}/devices")
    assert status == 200 and devices["devices"][0]["display_name"] == "Kiosk"


def test_what_a_guest_may_and_may_not_do(srv):
    agent, guest = _user(srv, "helper"), _guest(srv)
    room_id = _room(agent, True)
    assert guest.request("POST", f"{V3}/rooms/{room_id}/join", {})[0] == 200
    _, sent = agent.request("PUT", f"{V3}/rooms/{room_id}/send/m.room.message/a1", {"msgtype": "m.text", "body": "hi"})
    me = urllib.parse.quote(guest.user_id)
    allowed = [
        ("GET", f"/rooms/{room_id}/state", None), ("GET", f"/rooms/{room_id}/members", None),
        ("GET", f"/rooms/{room_id}/event/{sent['event_id']}", None),
        ("GET", f"/rooms/{room_id}/initialSync", None), ("GET", "/events?timeout=0", None),
        ("PUT", f"/rooms/{room_id}/typing/{me}", {"typing": True, "timeout": 1000}),
        ("POST", f"/rooms/{room_id}/receipt/m.read/{sent['event_id']}", {}),
        ("PUT", f"/profile/{me}/displayname", {"displayname": "Customer"}),
        ("GET", f"/profile/{me}", None), ("GET", "/devices", None),
        ("POST", "/keys/upload", {}), ("POST", "/keys/query", {"device_keys": {}}),
        ("PUT", f"/sendToDevice/m.test/t1", {"messages": {}}),
        ("POST", f"/user/{me}/filter", {"room": {"timeline": {"limit": 5}}}),
    ]
    for method, path, body in allowed:
        status, answer = guest.request(method, V3 + path, body)
        assert status == 200, (method, path, answer)
    forbidden = [
        ("POST", "/createRoom", {}), ("PUT", f"/user/{me}/account_data/x.y", {}),
        ("GET", "/joined_rooms", None), ("POST", f"/rooms/{room_id}/invite", {"user_id": agent.user_id}),
        ("PUT", f"/profile/{me}/avatar_url", {"avatar_url": "mxc://a/b"}),
        ("POST", f"/user/{me}/openid/request_token", {}), ("POST", "/account/password", {}),
        ("PUT", f"/directory/room/%23guestalias:test.local", {"room_id": room_id}),
    ]
    for method, path, body in forbidden:
        status, answer = guest.request(method, V3 + path, body)
        assert status == 403 and answer["errcode"] == "M_GUEST_ACCESS_FORBIDDEN", (method, path, answer)
    # Membership changes only by joining and leaving.
    status, answer = guest.request("PUT", f"{V3}/rooms/{room_id}/state/m.room.member/{me}", {"membership": "join"})
    assert status == 403 and answer["errcode"] == "M_FORBIDDEN"
    assert guest.request("POST", f"{V3}/rooms/{room_id}/leave", {})[0] == 200
    assert guest.request("POST", f"{V3}/logout", {})[0] == 200
    assert guest.request("GET", f"{V3}/account/whoami")[0] == 401


def test_guests_leave_a_room_that_stops_admitting_them(srv):
    agent, guest = _user(srv, "closer"), _guest(srv)
    room_id = _room(agent, True)
    assert guest.request("POST", f"{V3}/rooms/{room_id}/join", {})[0] == 200
    status, body = agent.request("PUT", f"{V3}/rooms/{room_id}/state/m.room.guest_access",
                                 {"guest_access": "forbidden"})
    assert status == 200, body
    deadline = time.time() + 10
    membership = None
    while time.time() < deadline:
        _, member = agent.request("GET", f"{V3}/rooms/{room_id}/state/m.room.member/{guest.user_id}")
        membership = member.get("membership")
        if membership == "leave":
            break
        time.sleep(0.1)
    assert membership == "leave"
    status, body = guest.request("POST", f"{V3}/rooms/{room_id}/join", {})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"


def test_tenant_rooms_never_admit_guests(srv, admin):
    acme = _user(srv, "acmeagent")
    assert admin.request("PUT", f"/_homeserver/admin/v1/users/{acme.user_id}/tenant", {"tenant_id": "acme"})[0] == 200
    room_id = _room(acme, True, room_alias_name="acme-help")
    guest = _guest(srv)
    # The tenant wall answers a guest as anyone outside the organization.
    by_id = guest.request("POST", f"{V3}/rooms/{room_id}/join", {})
    assert by_id[0] == 403 and by_id[1]["errcode"] == "M_FORBIDDEN"
    status, body = guest.request("POST", f"{V3}/join/%23acme-help:test.local", {})
    missing_status, missing = guest.request("POST", f"{V3}/join/%23no-such-room:test.local", {})
    assert (status, body["errcode"]) == (missing_status, missing["errcode"]) == (404, "M_NOT_FOUND")
    # Even a guest put into the organization by an admin is refused.
    assert admin.request("PUT", f"/_homeserver/admin/v1/users/{guest.user_id}/tenant", {"tenant_id": "acme"})[0] == 200
    status, body = guest.request("POST", f"{V3}/rooms/{room_id}/join", {})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"


def test_upgrade_keeps_the_user_id(srv):
    agent, guest = _user(srv, "upgrader"), _guest(srv)
    room_id = _room(agent, True)
    assert guest.request("POST", f"{V3}/rooms/{room_id}/join", {})[0] == 200
    localpart = guest.user_id[1:].split(":")[0]
    anon = Http(srv.base_url)
    base = {"password": "new-pw-1", "auth": {"type": "m.login.dummy"}}
    status, body = anon.request("POST", f"{V3}/register", dict(base, username="someoneelse",
                                                                 guest_access_token=guest.token))
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = anon.request("POST", f"{V3}/register", dict(base, username=localpart, guest_access_token="nope"))
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = anon.request("POST", f"{V3}/register", dict(base, username=localpart,
                                                                 guest_access_token=guest.token))
    assert status == 200, body
    assert body["user_id"] == guest.user_id and body["access_token"] != guest.token
    # The old token now belongs to a full account, still in its rooms.
    assert guest.request("GET", f"{V3}/account/whoami")[1]["is_guest"] is False
    assert guest.request("POST", f"{V3}/createRoom", {})[0] == 200
    assert room_id in guest.request("GET", f"{V3}/joined_rooms")[1]["joined_rooms"]
    status, login = anon.request("POST", f"{V3}/login", {"type": "m.login.password", "user": localpart,
                                                         "password": "new-pw-1"})
    assert status == 200 and login["user_id"] == guest.user_id
    # A guest may also upgrade with its token in the Authorization header.
    other = _guest(srv)
    status, body = other.request("POST", f"{V3}/register", dict(base, username=other.user_id[1:].split(":")[0]))
    assert status == 200 and body["user_id"] == other.user_id
