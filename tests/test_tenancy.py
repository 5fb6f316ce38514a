"""Tenant walls, enforced by the homeserver for plain client-server calls as Element makes
them: cross-tenant invite, join by id, join by alias, user-directory search, profile
look-up, presence and the public room directory are all refused or empty."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.server_harness import REPO, Http, ServerProcess

V3 = "/_matrix/client/v3"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("tenancy"))
    srv.write_config()
    subprocess.run([sys.executable, "-m", "homeserver.cli", "register-user", "admin", "--password", "adm-pw",
                    "--admin", "--config", str(srv.config_path)], cwd=REPO, check=True, capture_output=True)
    srv.start()
    http = Http(srv.base_url)
    _, login = http.request("POST", f"{V3}/login", {"type": "m.login.password", "user": "admin", "password": "adm-pw"})
    admin = Http(srv.base_url, login["access_token"])
    users = {}
    for name, tenant in (("alice", "acme"), ("carol", "acme"), ("bob", "globex"), ("dave", None)):
        reg = http.register(name)
        users[name] = Http(srv.base_url, reg["access_token"])
        users[name].user_id = reg["user_id"]
        if tenant:
            status, body = admin.request("PUT", f"/_homeserver/admin/v1/users/{reg['user_id']}/tenant",
                                         {"tenant_id": tenant})
            assert status == 200, body
    yield srv, admin, users
    srv.stop()
    srv.stop_postgres()


def _public_room(user: Http, alias: str, spoof_tenant: str | None = None) -> str:
    body = {"preset": "public_chat", "visibility": "public", "room_alias_name": alias, "name": alias}
    if spoof_tenant:
        body["creation_content"] = {"io.erpchat.tenant": spoof_tenant}
    status, room = user.request("POST", f"{V3}/createRoom", body)
    assert status == 200, room
    return room["room_id"]


def test_room_takes_the_creators_tenant(world):
    _, _, u = world
    room_id = _public_room(u["alice"], "acme-lobby", spoof_tenant="globex")
    _, create = u["alice"].request("GET", f"{V3}/rooms/{room_id}/state/m.room.create")
    assert create["io.erpchat.tenant"] == "acme"  # whatever the client sent
    # Same tenant: everything works as in plain Matrix.
    assert u["carol"].request("POST", f"{V3}/join/%23acme-lobby:test.local", {})[0] == 200


def test_cross_tenant_invite_and_joins_refused(world):
    _, _, u = world
    room_id = _public_room(u["alice"], "acme-public")
    status, body = u["alice"].request("POST", f"{V3}/rooms/{room_id}/invite", {"user_id": u["bob"].user_id})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = u["bob"].request("POST", f"{V3}/rooms/{room_id}/join", {})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = u["bob"].request("POST", f"{V3}/join/%23acme-public:test.local", {})
    assert status in (403, 404)
    # A user with no tenant is outside every tenant's wall too, and the reverse holds.
    assert u["dave"].request("POST", f"{V3}/rooms/{room_id}/join", {})[0] == 403
    dave_room = _public_room(u["dave"], "plain-room")
    assert u["alice"].request("POST", f"{V3}/rooms/{dave_room}/join", {})[0] == 403
    # createRoom with a cross-tenant invite creates nothing.
    _, before = u["alice"].request("GET", f"{V3}/joined_rooms")
    status, _ = u["alice"].request("POST", f"{V3}/createRoom", {"invite": [u["bob"].user_id]})
    assert status == 403
    _, after = u["alice"].request("GET", f"{V3}/joined_rooms")
    assert before == after
    # Setting the membership directly through the state API is refused the same way.
    status, _ = u["alice"].request("PUT", f"{V3}/rooms/{room_id}/state/m.room.member/{u['bob'].user_id}",
                                   {"membership": "invite"})
    assert status == 403


def test_alias_of_another_tenant_does_not_resolve(world):
    _, _, u = world
    _public_room(u["alice"], "acme-secret")
    status, body = u["bob"].request("GET", f"{V3}/directory/room/%23acme-secret:test.local")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    assert u["carol"].request("GET", f"{V3}/directory/room/%23acme-secret:test.local")[0] == 200


def test_directories_profiles_and_presence_are_scoped(world):
    _, _, u = world
    _public_room(u["bob"], "globex-hall")
    _, found = u["bob"].request("POST", f"{V3}/user_directory/search", {"search_term": "alice"})
    assert found["results"] == []
    _, found = u["carol"].request("POST", f"{V3}/user_directory/search", {"search_term": "alice"})
    assert [r["user_id"] for r in found["results"]] == [u["alice"].user_id]
    # Another organization's users look like users that do not exist.
    status, body = u["bob"].request("GET", f"{V3}/profile/{u['alice'].user_id}")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"
    assert u["carol"].request("GET", f"{V3}/profile/{u['alice'].user_id}")[0] == 200
    u["alice"].request("GET", f"{V3}/sync?timeout=0")  # alice comes online
    status, _ = u["bob"].request("GET", f"{V3}/presence/{u['alice'].user_id}/status")
    assert status == 403
    _, rooms = u["bob"].request("GET", f"{V3}/publicRooms")
    names = {c.get("name") for c in rooms["chunk"]}
    assert "globex-hall" in names and not names & {"acme-lobby", "acme-public", "acme-secret"}
    _, rooms = u["carol"].request("POST", f"{V3}/publicRooms", {})
    names = {c.get("name") for c in rooms["chunk"]}
    assert "globex-hall" not in names and "acme-public" in names
    # Anonymous directory requests see only rooms without a tenant.
    _, rooms = Http(u["bob"].base_url).request("GET", f"{V3}/publicRooms")
    assert {c.get("name") for c in rooms["chunk"]} <= {"plain-room"}


def test_only_admins_set_tenants(world):
    _, admin, u = world
    status, _ = u["alice"].request("PUT", f"/_homeserver/admin/v1/users/{u['alice'].user_id}/tenant",
                                   {"tenant_id": "globex"})
    assert status == 403
    status, body = admin.request("GET", f"/_homeserver/admin/v1/users/{u['bob'].user_id}/tenant")
    assert status == 200 and body == {"tenant_id": "globex"}
    status, body = admin.request("PUT", f"/_homeserver/admin/v1/users/{u['bob'].user_id}/tenant",
                                 {"tenant_id": "bad tenant!"})
    assert status == 400


def test_world_readable_room_of_another_tenant_stays_closed(world):
    _, _, u = world
    _, room = u["alice"].request("POST", f"{V3}/createRoom", {"preset": "public_chat", "initial_state": [
        {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "world_readable"}}]})
    room_id = room["room_id"]
    u["alice"].request("PUT", f"{V3}/rooms/{room_id}/send/m.room.message/w1", {"msgtype": "m.text", "body": "internal"})
    assert u["bob"].request("GET", f"{V3}/rooms/{room_id}/messages?dir=b")[0] == 403
    assert u["bob"].request("GET", f"{V3}/rooms/{room_id}/state")[0] == 403
    assert u["carol"].request("GET", f"{V3}/rooms/{room_id}/messages?dir=b")[0] == 200


def test_initial_state_membership_faces_the_wall_and_to_device_stays_inside(world):
    _, _, u = world
    status, _ = u["alice"].request("POST", f"{V3}/createRoom", {"initial_state": [
        {"type": "m.room.member", "state_key": u["bob"].user_id, "content": {"membership": "invite"}}]})
    assert status == 403
    _, bob_sync = u["bob"].request("GET", f"{V3}/sync?timeout=0")
    _, me = u["bob"].request("GET", f"{V3}/account/whoami")
    msg = {"messages": {u["bob"].user_id: {me["device_id"]: {"hello": "from acme"}}}}
    assert u["alice"].request("PUT", f"{V3}/sendToDevice/m.test/x1", msg)[0] == 200
    _, after = u["bob"].request("GET", f"{V3}/sync?timeout=0&since={bob_sync['next_batch']}")
    assert after["to_device"]["events"] == []
