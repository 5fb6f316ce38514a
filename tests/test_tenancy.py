"""Tenant walls, enforced by the homeserver for plain client-server calls as Element makes
them: cross-tenant invite, join by id, join by alias, user-directory search, profile
look-up, presence and the public room directory are all refused or empty, and another
tenant's rooms, aliases, users and keys answer exactly like missing ones.
(tests/test_tenant_route_walk.py walks every route the same way.)"""
from __future__ import annotations

import secrets
import subprocess
import sys
import urllib.parse

import psycopg2
import pytest
import yaml

from tests.server_harness import REPO, Http, ServerProcess

V3 = "/_matrix/client/v3"
ADMIN = "/_homeserver/admin/v1"
SERVICE = {"id": "svc", "url": None, "as_token": secrets.token_hex(16), "hs_token": secrets.token_hex(16),
           "sender_localpart": "_svc_bot",
           "namespaces": {"users": [{"exclusive": True, "regex": "@_svc_.*"}],
                          "aliases": [{"exclusive": True, "regex": "#_svc_.*"}], "rooms": []}}


def q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("tenancy")
    (d / "svc.yaml").write_text(yaml.safe_dump(SERVICE))
    srv = ServerProcess(d / "hs", extra_config=f"app_service_config_files: [{d / 'svc.yaml'}]\n")
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
        users[name].device_id = reg["device_id"]
        if tenant:
            status, body = admin.request("PUT", f"/_homeserver/admin/v1/users/{reg['user_id']}/tenant",
                                         {"tenant_id": tenant})
            assert status == 200, body
    yield srv, admin, users
    srv.stop()
    srv.stop_postgres()


def _public_room(user: Http, alias: str, spoof_tenant: str | None = None, **extra) -> str:
    return _public_room_and_alias(user, alias, spoof_tenant, **extra)[0]


def _public_room_and_alias(user: Http, alias: str, spoof_tenant: str | None = None,
                           **extra) -> tuple[str, str]:
    body = {"preset": "public_chat", "visibility": "public", "room_alias_name": alias, "name": alias, **extra}
    if spoof_tenant:
        body["creation_content"] = {"io.erpchat.tenant": spoof_tenant}
    status, room = user.request("POST", f"{V3}/createRoom", body)
    assert status == 200, room
    # The alias the server made (in the creator's part of the alias space).
    return room["room_id"], room.get("room_alias", f"#{alias}:test.local")


def _same_answer(a: tuple, b: tuple, status: int, errcode: str, masks: tuple[str, ...] = ()) -> None:
    """Two answers that must not tell their cases apart (once the ids asked about, in
    `masks`, are masked), and that say nothing of tenants."""
    def masked(answer):
        text = repr(answer)
        for m in masks:
            text = text.replace(m, "<id>")
        return text
    assert masked(a) == masked(b) and a[0] == status and a[1]["errcode"] == errcode, (a, b)
    assert "organi" not in a[1]["error"] and "tenant" not in a[1]["error"], a


def test_room_takes_the_creators_tenant(world):
    _, _, u = world
    room_id = _public_room(u["alice"], "acme-lobby", spoof_tenant="globex")
    _, create = u["alice"].request("GET", f"{V3}/rooms/{room_id}/state/m.room.create")
    assert create["io.erpchat.tenant"] == "acme"  # whatever the client sent
    # Same tenant: everything works as in plain Matrix (the alias is in acme's part).
    assert u["carol"].request("POST", f"{V3}/join/%23acme.acme-lobby:test.local", {})[0] == 200


def test_cross_tenant_invite_and_joins_refused(world):
    _, _, u = world
    room_id = _public_room(u["alice"], "acme-public")
    status, body = u["alice"].request("POST", f"{V3}/rooms/{room_id}/invite", {"user_id": u["bob"].user_id})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = u["bob"].request("POST", f"{V3}/rooms/{room_id}/join", {})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = u["bob"].request("POST", f"{V3}/join/%23acme.acme-public:test.local", {})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
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
    _, secret = _public_room_and_alias(u["alice"], "acme-secret")
    assert secret == "#acme.acme-secret:test.local"
    secret, missing = q(secret), q("#acme.acme-nothing:test.local")
    _same_answer(u["bob"].request("GET", f"{V3}/directory/room/{secret}"),
                 u["bob"].request("GET", f"{V3}/directory/room/{missing}"), 403, "M_FORBIDDEN")
    assert u["carol"].request("GET", f"{V3}/directory/room/{secret}")[0] == 200
    # In one's own part a missing alias is simply missing.
    status, body = u["carol"].request("GET", f"{V3}/directory/room/{missing}")
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"


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


# ---- another tenant's things answer like missing ones (each failed before the walls) ----

def _fresh(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(4)}"


def _missing_room() -> str:
    return "!" + secrets.token_urlsafe(32)[:43]


def test_room_alias_list_of_another_tenant_looks_missing(world):
    _, _, u = world
    room_id = _public_room(u["alice"], _fresh("readable"), initial_state=[{
        "type": "m.room.history_visibility", "content": {"history_visibility": "world_readable"}}])
    assert u["carol"].request("GET", f"{V3}/rooms/{q(room_id)}/aliases")[0] == 200
    gone = _missing_room()
    _same_answer(u["bob"].request("GET", f"{V3}/rooms/{q(room_id)}/aliases"),
                 u["bob"].request("GET", f"{V3}/rooms/{q(gone)}/aliases"), 404, "M_NOT_FOUND")


def _upload_keys(user: Http) -> None:
    device = user.device_id
    status, _ = user.request("POST", f"{V3}/keys/upload", {
        "device_keys": {"user_id": user.user_id, "device_id": device, "algorithms": ["m.megolm.v1.aes-sha2"],
                        "keys": {f"ed25519:{device}": secrets.token_hex(16)},
                        "signatures": {user.user_id: {f"ed25519:{device}": secrets.token_hex(32)}}},
        "one_time_keys": {f"signed_curve25519:{_fresh('k')}": {"key": secrets.token_hex(16)}}})
    assert status == 200


def test_keys_of_another_tenants_user_look_missing(world):
    _, _, u = world
    _upload_keys(u["bob"])
    _upload_keys(u["carol"])
    ghost = f"@{_fresh('ghost')}:test.local"
    bob, me = u["bob"].user_id, u["alice"]
    _, found = me.request("POST", f"{V3}/keys/query", {"device_keys": {bob: [], ghost: []}})
    assert found["device_keys"] == {bob: {}, ghost: {}}
    assert bob not in str(found["master_keys"]) + str(found["self_signing_keys"])
    # The same request about a colleague does answer (the query works at all).
    _, colleague = me.request("POST", f"{V3}/keys/query", {"device_keys": {u["carol"].user_id: []}})
    assert list(colleague["device_keys"][u["carol"].user_id]) == [u["carol"].device_id]
    _, claimed = me.request("POST", f"{V3}/keys/claim", {"one_time_keys": {
        bob: {u["bob"].device_id: "signed_curve25519"}, ghost: {"GHOSTDEV": "signed_curve25519"}}})
    assert claimed["one_time_keys"] == {}
    _, claimed = me.request("POST", f"{V3}/keys/claim", {"one_time_keys": {
        u["carol"].user_id: {u["carol"].device_id: "signed_curve25519"}}})
    assert list(claimed["one_time_keys"]) == [u["carol"].user_id]


def test_device_lists_never_mention_another_tenants_users(world):
    srv, admin, u = world
    http = Http(srv.base_url)
    reg = http.register(_fresh("erin"))
    erin = Http(srv.base_url, reg["access_token"])
    erin.user_id, erin.device_id = reg["user_id"], reg["device_id"]
    assert admin.request("PUT", f"{ADMIN}/users/{q(erin.user_id)}/tenant", {"tenant_id": "acme"})[0] == 200
    _, room = u["alice"].request("POST", f"{V3}/createRoom", {"preset": "public_chat"})
    room_id = room["room_id"]
    assert erin.request("POST", f"{V3}/join/{q(room_id)}", {})[0] == 200
    _, first = u["alice"].request("GET", f"{V3}/sync?timeout=0")
    since = first["next_batch"]
    # Erin moves to another organization while still in alice's room, then changes keys.
    assert admin.request("PUT", f"{ADMIN}/users/{q(erin.user_id)}/tenant", {"tenant_id": "globex"})[0] == 200
    _upload_keys(erin)
    _upload_keys(u["carol"])  # a colleague's change shows, so the stream itself works
    _, later = u["alice"].request("GET", f"{V3}/sync?timeout=0&since={since}")
    assert erin.user_id not in later["device_lists"]["changed"]
    assert u["carol"].user_id in later["device_lists"]["changed"]
    _, changes = u["alice"].request("GET", f"{V3}/keys/changes?from={since}&to={later['next_batch']}")
    assert erin.user_id not in changes["changed"] and u["carol"].user_id in changes["changed"]
    assert u["alice"].request("POST", f"{V3}/rooms/{q(room_id)}/kick", {"user_id": erin.user_id})[0] == 200
    _, after = u["alice"].request("GET", f"{V3}/sync?timeout=0&since={later['next_batch']}")
    assert erin.user_id not in after["device_lists"]["left"]


def test_alias_names_can_be_neither_probed_nor_squatted(world):
    _, _, u = world
    _, taken = _public_room_and_alias(u["alice"], "acme-taken")
    _, bob_room = u["bob"].request("POST", f"{V3}/createRoom", {})
    taken, free = q(taken), q(f"#acme.{_fresh('free')}:test.local")
    body = {"room_id": bob_room["room_id"]}
    _same_answer(u["bob"].request("PUT", f"{V3}/directory/room/{taken}", body),
                 u["bob"].request("PUT", f"{V3}/directory/room/{free}", body), 403, "M_FORBIDDEN")
    _same_answer(u["bob"].request("DELETE", f"{V3}/directory/room/{taken}"),
                 u["bob"].request("DELETE", f"{V3}/directory/room/{free}"), 403, "M_FORBIDDEN")
    # Whatever name bob asks for, his alias lands in globex's part: acme keeps its own.
    status, made = u["bob"].request("POST", f"{V3}/createRoom", {"room_alias_name": "acme.squat"})
    assert status == 200 and made["room_alias"] == "#globex.acme.squat:test.local"
    status, made = u["alice"].request("POST", f"{V3}/createRoom", {"room_alias_name": "squat"})
    assert status == 200 and made["room_alias"] == "#acme.squat:test.local"
    # Users without a tenant keep the plain part, minus every tenant's part.
    status, made = u["dave"].request("POST", f"{V3}/createRoom", {"room_alias_name": "plain-name"})
    assert status == 200 and made["room_alias"] == "#plain-name:test.local"
    status, body = u["dave"].request("POST", f"{V3}/createRoom", {"room_alias_name": "acme.grab"})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = u["alice"].request("PUT", f"{V3}/directory/room/{q('#plain-other:test.local')}",
                                      {"room_id": made.get("room_id", "!x")})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"


def test_invites_do_not_tell_another_tenants_user_from_a_missing_one(world):
    _, _, u = world
    _, room = u["alice"].request("POST", f"{V3}/createRoom", {})
    ghost = f"@{_fresh('ghost')}:test.local"
    path = f"{V3}/rooms/{q(room['room_id'])}/invite"
    _same_answer(u["alice"].request("POST", path, {"user_id": u["bob"].user_id}),
                 u["alice"].request("POST", path, {"user_id": ghost}), 403, "M_FORBIDDEN")
    _same_answer(u["alice"].request("POST", f"{V3}/createRoom", {"invite": [u["bob"].user_id]}),
                 u["alice"].request("POST", f"{V3}/createRoom", {"invite": [ghost]}), 403, "M_FORBIDDEN")
    member = f"{V3}/rooms/{q(room['room_id'])}/state/m.room.member/"
    _same_answer(u["alice"].request("PUT", member + q(u["bob"].user_id), {"membership": "invite"}),
                 u["alice"].request("PUT", member + q(ghost), {"membership": "invite"}), 403, "M_FORBIDDEN")
    assert u["alice"].request("POST", path, {"user_id": u["carol"].user_id})[0] == 200


def test_joins_across_tenants_are_forbidden_like_joins_of_nothing(world):
    _, _, u = world
    room_id, alias = _public_room_and_alias(u["alice"], "acme-open")
    _same_answer(u["bob"].request("POST", f"{V3}/join/{q(alias)}", {}),
                 u["bob"].request("POST", f"{V3}/join/{q('#acme.acme-none:test.local')}", {}),
                 403, "M_FORBIDDEN")
    _same_answer(u["bob"].request("POST", f"{V3}/join/{q(room_id)}", {}),
                 u["bob"].request("POST", f"{V3}/join/{q(_missing_room())}", {}), 403, "M_FORBIDDEN")
    _same_answer(u["bob"].request("POST", f"{V3}/rooms/{q(room_id)}/join", {}),
                 u["bob"].request("POST", f"{V3}/rooms/{q(_missing_room())}/join", {}), 403, "M_FORBIDDEN")


def test_directory_visibility_of_another_tenants_room_looks_missing(world):
    _, _, u = world
    room_id = _public_room(u["alice"], _fresh("listed"))
    assert u["carol"].request("GET", f"{V3}/directory/list/room/{q(room_id)}") == (200, {"visibility": "public"})
    gone = _missing_room()
    anonymous = Http(u["bob"].base_url)
    for asker in (u["bob"], anonymous, u["dave"]):
        _same_answer(asker.request("GET", f"{V3}/directory/list/room/{q(room_id)}"),
                     asker.request("GET", f"{V3}/directory/list/room/{q(gone)}"), 404, "M_NOT_FOUND")
    dave_room = _public_room(u["dave"], _fresh("plain-listed"))
    assert anonymous.request("GET", f"{V3}/directory/list/room/{q(dave_room)}")[0] == 200


def test_service_namespace_aliases_follow_their_rooms_wall(world):
    """An application service names its aliases itself (no tenant slug); there another
    tenant's alias answers exactly like a missing one."""
    srv, _, u = world
    service = Http(srv.base_url, SERVICE["as_token"])
    status, _ = service.request("POST", f"{V3}/register", {"type": "m.login.application_service",
                                                          "username": "_svc_acme"})
    assert status == 200
    acting = "?user_id=" + q("@_svc_acme:test.local")
    assert service.request("PUT", f"{ADMIN}/users/{q('@_svc_acme:test.local')}/tenant{acting}",
                           {"tenant_id": "acme"})[0] == 200
    status, room = service.request("POST", f"{V3}/createRoom{acting}", {"room_alias_name": "_svc_orders"})
    assert status == 200 and room["room_alias"] == "#_svc_orders:test.local", room
    orders, none = "#_svc_orders:test.local", "#_svc_none:test.local"
    assert u["carol"].request("GET", f"{V3}/directory/room/{q(orders)}")[1]["room_id"] == room["room_id"]
    masks = (q(orders), q(none), orders, none)
    for method, path, body, status, errcode in (
            ("GET", "/directory/room/{}", None, 404, "M_NOT_FOUND"),
            ("POST", "/join/{}", {}, 404, "M_NOT_FOUND"),
            ("DELETE", "/directory/room/{}", None, 404, "M_NOT_FOUND"),
            ("PUT", "/directory/room/{}", {"room_id": room["room_id"]}, 400, "M_EXCLUSIVE")):
        _same_answer(u["bob"].request(method, V3 + path.format(q(orders)), body),
                     u["bob"].request(method, V3 + path.format(q(none)), body), status, errcode, masks)
    assert u["carol"].request("GET", f"{V3}/directory/room/{q(orders)}")[0] == 200  # still there


def test_aliases_made_before_the_split_move_to_their_tenants_part(tmp_path):
    """Migration 005 puts old aliases where their rooms now say they belong."""
    srv = ServerProcess(tmp_path / "hs")
    srv.write_config()
    subprocess.run([sys.executable, "-m", "homeserver.cli", "register-user", "admin", "--password", "adm-pw",
                    "--admin", "--config", str(srv.config_path)], cwd=REPO, check=True, capture_output=True)
    srv.start()
    try:
        http = Http(srv.base_url)
        _, login = http.request("POST", f"{V3}/login", {"type": "m.login.password", "user": "admin",
                                                        "password": "adm-pw"})
        admin = Http(srv.base_url, login["access_token"])
        people = {}
        for name, tenant in (("alice", "acme.eu"), ("dave", None), ("svc", "acme.eu")):
            reg = http.register(name)
            people[name] = Http(srv.base_url, reg["access_token"])
            if tenant:
                admin.request("PUT", f"{ADMIN}/users/{q(reg['user_id'])}/tenant", {"tenant_id": tenant})
        acme_room = people["alice"].request("POST", f"{V3}/createRoom", {})[1]["room_id"]
        plain_room = people["dave"].request("POST", f"{V3}/createRoom", {})[1]["room_id"]
        old = {  # alias -> (room, creator), as an older server stored them
            "#lobby:test.local": (acme_room, "@alice:test.local"),
            "#globex.y:test.local": (acme_room, "@alice:test.local"),
            "#acme=2eeu.ok:test.local": (acme_room, "@alice:test.local"),
            "#acme=2eeu.taken:test.local": (acme_room, "@alice:test.local"),
            "#taken:test.local": (acme_room, "@alice:test.local"),
            "#_svc_orders:test.local": (acme_room, "@svc:test.local"),
            "#team.chat:test.local": (plain_room, "@dave:test.local"),
            "#plain:test.local": (plain_room, "@dave:test.local"),
        }
        conn = psycopg2.connect(srv.dsn())
        with conn, conn.cursor() as cur:
            cur.executemany("INSERT INTO room_aliases (room_alias, room_id, creator) VALUES (%s, %s, %s)",
                            [(a, r, c) for a, (r, c) in old.items()])
            cur.execute("UPDATE users SET appservice_id = 'svc' WHERE user_id = '@svc:test.local'")
            cur.execute("DELETE FROM schema_version WHERE version = 5")  # 005 runs again
        conn.close()
        srv.stop()
        srv.start()
        conn = psycopg2.connect(srv.dsn())
        with conn, conn.cursor() as cur:
            cur.execute("SELECT room_alias, room_id FROM room_aliases")
            now = dict(cur.fetchall())
        conn.close()
        assert now == {
            "#acme=2eeu.lobby:test.local": acme_room,
            "#acme=2eeu.globex.y:test.local": acme_room,
            "#acme=2eeu.ok:test.local": acme_room,
            "#acme=2eeu.taken:test.local": acme_room,   # "#taken" found its place taken
            "#_svc_orders:test.local": acme_room,       # a service's own: left as named
            "#plain:test.local": plain_room,            # "#team.chat" squatted tenant "team"
        }
        assert people["alice"].request("GET", f"{V3}/directory/room/{q('#acme=2eeu.lobby:test.local')}") \
            == (200, {"room_id": acme_room, "servers": ["test.local"]})
    finally:
        srv.stop()
        srv.stop_postgres()
