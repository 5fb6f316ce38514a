"""ERP REST API against a real homeserver and a real bridge process: tenants, users,
objects, membership sync, login tokens, deactivation, errors."""
from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.server_harness import Http

SERVER = "test.local"


def put(env, path, body, token=None):
    return env.erp.request("PUT", path, body, token=token)


def make_tenant(env, unique, name="ACME GmbH"):
    tenant = unique("t")
    status, body = put(env, f"/_erp/v1/tenants/{tenant}", {"name": name})
    assert status == 200, (body, env.bridge.log_text())
    return tenant, body


def make_user(env, tenant, erp_id, name=None, active=True):
    status, body = put(env, f"/_erp/v1/users/{erp_id}",
                       {"tenant_id": tenant, "display_name": name or erp_id.title(), "active": active})
    assert status == 200, (body, env.bridge.log_text())
    return body["user_id"]


def bot_of(tenant):
    return f"@_erp_bot_{tenant}:{SERVER}"


def test_tenant_space_and_general_room(env, unique):
    tenant, body = make_tenant(env, unique, "ACME GmbH")
    assert set(body) == {"tenant_id", "space_id", "general_room_id"}
    hs, bot = env.hs, bot_of(tenant)
    space, general = body["space_id"], body["general_room_id"]
    create = hs.state(space, "m.room.create", "", bot)
    assert create["type"] == "m.space"
    assert create["io.erpchat.tenant"] == tenant
    assert hs.state(general, "m.room.create", "", bot)["io.erpchat.tenant"] == tenant
    assert hs.state(space, "m.room.name", "", bot)["name"] == "ACME GmbH"
    assert hs.state(general, "m.room.name", "", bot)["name"] == "ACME GmbH – General"
    assert hs.state(space, "m.space.child", general, bot)["via"] == [SERVER]
    assert hs.state(general, "m.space.parent", space, bot)["via"] == [SERVER]
    assert hs.resolve(f"#_erp_space.{tenant}:{SERVER}", bot) == space
    assert hs.resolve(f"#_erp_space.{tenant}:{SERVER}") is None  # other tenants cannot see it
    assert hs.resolve(f"#_erp_general.{tenant}:{SERVER}", bot) == general

    # Idempotent, and a rename reaches both rooms.
    status, again = put(env, f"/_erp/v1/tenants/{tenant}", {"name": "ACME GmbH"})
    assert status == 200 and again == body
    status, renamed = put(env, f"/_erp/v1/tenants/{tenant}", {"name": "ACME AG"})
    assert status == 200 and renamed == body
    assert hs.state(space, "m.room.name", "", bot)["name"] == "ACME AG"
    assert hs.state(general, "m.room.name", "", bot)["name"] == "ACME AG – General"


def test_users_join_space_and_general(env, unique):
    tenant, t = make_tenant(env, unique)
    alice = unique("alice")
    user_id = make_user(env, tenant, alice, "Alice Example")
    assert user_id == f"@_erp_u_{alice}:{SERVER}"
    hs = env.hs
    status, body = hs.as_user("GET", f"/_matrix/client/v3/profile/{quote(user_id)}/displayname",
                              bot_of(tenant))
    assert status == 200 and body["displayname"] == "Alice Example"
    assert user_id in hs.joined(t["space_id"], bot_of(tenant))
    assert user_id in hs.joined(t["general_room_id"], bot_of(tenant))
    status, body = hs.request("GET", f"/_homeserver/admin/v1/users/{quote(user_id)}/tenant")
    assert status == 200 and body["tenant_id"] == tenant

    # Idempotent; display name changes are kept in sync.
    assert make_user(env, tenant, alice, "Alice Example") == user_id
    make_user(env, tenant, alice, "Alice Renamed")
    status, body = hs.as_user("GET", f"/_matrix/client/v3/profile/{quote(user_id)}/displayname",
                              bot_of(tenant))
    assert body["displayname"] == "Alice Renamed"


def test_uppercase_ids_are_escaped(env, unique):
    tenant, _ = make_tenant(env, unique)
    erp_id = "U-" + unique("x")
    user_id = make_user(env, tenant, erp_id)
    assert user_id == f"@_erp_u_=55-{erp_id[2:]}:{SERVER}"


def test_object_room_and_membership_sync(env, unique):
    tenant, t = make_tenant(env, unique)
    a, b, c = (unique(n) for n in ("anna", "ben", "cleo"))
    ua, ub, uc = (make_user(env, tenant, x) for x in (a, b, c))
    order = unique("SO")
    path = f"/_erp/v1/tenants/{tenant}/objects/order/{order}"
    fields = {"customer": "Müller KG", "total": "1200.00", "lines": 3}
    status, body = put(env, path, {"tenant_id": tenant, "title": f"Order {order}",
                                   "participants": [a, b], "fields": fields})
    assert status == 200, (body, env.bridge.log_text())
    room, alias = body["room_id"], body["alias"]
    assert alias == f"#_erp_obj.{tenant}.order.=53=4f{order[2:]}:{SERVER}"
    hs, bot = env.hs, bot_of(tenant)
    assert hs.resolve(alias, bot) == room
    assert hs.state(room, "m.room.name", "", bot)["name"] == f"Order {order}"
    state = hs.state(room, "io.erpchat.object", "", bot)
    assert state["fields"] == fields and state["object_type"] == "order"
    assert hs.state(room, "m.room.create", "", bot)["io.erpchat.tenant"] == tenant
    assert hs.state(t["space_id"], "m.space.child", room, bot) is not None
    assert hs.state(room, "m.space.parent", t["space_id"], bot) is not None
    assert hs.joined(room, bot) == {bot, ua, ub}

    # Same call again: same room, nothing changes.
    status, again = put(env, path, {"tenant_id": tenant, "title": f"Order {order}",
                                    "participants": [a, b], "fields": fields})
    assert status == 200 and again == body
    assert body["state"] == "open"
    assert hs.joined(room, bot) == {bot, ua, ub}

    # Participants change: anna removed, cleo added; title and fields follow.
    status, _ = put(env, path, {"tenant_id": tenant, "title": "Order (shipped)",
                                "participants": [b, c], "fields": {"status": "shipped"}})
    assert status == 200
    assert hs.joined(room, bot) == {bot, ub, uc}
    assert hs.state(room, "m.room.member", ua, bot)["membership"] == "leave"
    assert hs.state(room, "m.room.name", "", bot)["name"] == "Order (shipped)"
    assert hs.state(room, "io.erpchat.object", "", bot)["fields"] == {"status": "shipped"}

    # Empty participant list: only the bot stays.
    status, _ = put(env, path, {"tenant_id": tenant, "title": "Order (shipped)", "participants": []})
    assert status == 200
    assert hs.joined(room, bot) == {bot}


def test_login_token_signs_in_once(env, unique):
    tenant, _ = make_tenant(env, unique)
    alice = unique("alice")
    user_id = make_user(env, tenant, alice)
    status, body = env.erp.request("POST", f"/_erp/v1/users/{alice}/login-token", {})
    assert status == 200, body
    assert body["login_token"] and body["expires_in_ms"] > 0
    assert body["login_url"].startswith("https://app.element.io/erp-login.html#hs=")
    client = Http(env.server.base_url)
    status, login = client.request("POST", "/_matrix/client/v3/login",
                                   {"type": "m.login.token", "token": body["login_token"]})
    assert status == 200, login
    assert login["user_id"] == user_id
    status, again = client.request("POST", "/_matrix/client/v3/login",
                                   {"type": "m.login.token", "token": body["login_token"]})
    assert status == 403, again

    status, err = env.erp.request("POST", f"/_erp/v1/users/{unique('nobody')}/login-token", {})
    assert status == 404 and err["errcode"] == "M_NOT_FOUND"


def test_deactivation_logs_out_and_removes_from_rooms(env, unique):
    tenant, t = make_tenant(env, unique)
    a, b = unique("anna"), unique("ben")
    ua, ub = make_user(env, tenant, a), make_user(env, tenant, b)
    order = unique("o")
    status, obj = put(env, f"/_erp/v1/tenants/{tenant}/objects/order/{order}",
                      {"tenant_id": tenant, "title": "O", "participants": [a, b]})
    assert status == 200
    status, tok = env.erp.request("POST", f"/_erp/v1/users/{a}/login-token", {})
    client = Http(env.server.base_url)
    status, login = client.request("POST", "/_matrix/client/v3/login",
                                   {"type": "m.login.token", "token": tok["login_token"]})
    assert status == 200
    client.token = login["access_token"]
    status, body = client.request("PUT", f"/_matrix/client/v3/rooms/{quote(obj['room_id'])}/send/m.room.message/t1",
                                  {"msgtype": "m.text", "body": "before deactivation"})
    assert status == 200, body

    make_user(env, tenant, a, active=False)
    status, _ = client.request("GET", "/_matrix/client/v3/account/whoami")
    assert status == 401
    hs, bot = env.hs, bot_of(tenant)
    for room in (t["space_id"], t["general_room_id"], obj["room_id"]):
        assert ua not in hs.joined(room, bot)
    assert ub in hs.joined(obj["room_id"], bot)
    # History stays.
    status, page = env.erp.request("GET", f"/_erp/v1/tenants/{tenant}/objects/order/{order}/messages")
    assert [m["body"] for m in page["chunk"]] == ["before deactivation"]
    # No more login tokens, no posting, and re-syncing the object does not re-add them.
    status, err = env.erp.request("POST", f"/_erp/v1/users/{a}/login-token", {})
    assert status == 403
    status, err = env.erp.request("POST", f"/_erp/v1/tenants/{tenant}/objects/order/{order}/messages",
                                  {"sender": a, "body": "x", "txn_id": "t"})
    assert status == 403
    status, _ = put(env, f"/_erp/v1/tenants/{tenant}/objects/order/{order}",
                    {"tenant_id": tenant, "title": "O", "participants": [a, b]})
    assert status == 200 and ua not in hs.joined(obj["room_id"], bot)
    # Repeating the deactivation is harmless; reactivation brings them back.
    make_user(env, tenant, a, active=False)
    make_user(env, tenant, a, active=True)
    for room in (t["space_id"], t["general_room_id"], obj["room_id"]):
        assert ua in hs.joined(room, bot)


# ---- errors: JSON, the right status, and nothing created -------------------------------

def test_auth_errors(env, unique):
    tenant = unique("t")
    status, body = Http(env.bridge.base_url).request("PUT", f"/_erp/v1/tenants/{tenant}", {"name": "x"})
    assert status == 401 and body["errcode"] == "M_MISSING_TOKEN"
    status, body = put(env, f"/_erp/v1/tenants/{tenant}", {"name": "x"}, token="wrong-token")
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    assert env.hs.resolve(f"#_erp_space.{tenant}:{SERVER}", bot_of(tenant)) is None


@pytest.mark.parametrize("path, body", [
    ("/_erp/v1/tenants/{t}", {}),
    ("/_erp/v1/tenants/{t}", {"name": ""}),
    ("/_erp/v1/tenants/{t}", {"name": "x", "surprise": 1}),
    ("/_erp/v1/tenants/bad%20id", {"name": "x"}),
    ("/_erp/v1/users/{u}", {"tenant_id": "{t}", "display_name": "A"}),
    ("/_erp/v1/users/{u}", {"tenant_id": "{t}", "display_name": "A", "active": "yes"}),
    ("/_erp/v1/tenants/{t}/objects/Order/{u}", {"tenant_id": "{t}", "title": "x"}),
    ("/_erp/v1/tenants/{t}/objects/order/{u}", {"tenant_id": "{t}", "title": "x", "fields": {"p": 1.5}}),
])
def test_bad_requests_are_400(env, unique, path, body):
    tenant, _ = make_tenant(env, unique)
    u = unique("u")
    path = path.replace("{t}", tenant).replace("{u}", u)
    body = {k: (v.replace("{t}", tenant) if isinstance(v, str) else v) for k, v in body.items()}
    status, resp = put(env, path, body)
    assert status == 400, resp
    assert resp["errcode"] in ("M_BAD_JSON", "M_INVALID_PARAM", "M_NOT_JSON") and resp["error"]
    status, _ = env.hs.request("GET", f"/_matrix/client/v3/profile/{quote(f'@_erp_u_{u}:{SERVER}')}")
    assert status == 404  # nothing registered


def test_not_json(env):
    status, body = env.erp.request("PUT", "/_erp/v1/tenants/x", raw=b"{nope")
    assert status == 400 and body["errcode"] == "M_NOT_JSON"


def test_unknown_references_create_nothing(env, unique):
    tenant, _ = make_tenant(env, unique)
    other, _ = make_tenant(env, unique)
    a = unique("a")
    make_user(env, tenant, a)
    stranger = unique("s")
    make_user(env, other, stranger)

    status, body = put(env, f"/_erp/v1/users/{unique('u')}",
                       {"tenant_id": unique("nosuch"), "display_name": "X", "active": True})
    assert status == 404 and body["errcode"] == "M_NOT_FOUND"

    order = unique("o")
    status, body = put(env, f"/_erp/v1/tenants/{tenant}/objects/order/{order}",
                       {"tenant_id": tenant, "title": "x", "participants": [a, "ghost1"]})
    assert status == 404 and body["unknown_participants"] == ["ghost1"]
    status, body = put(env, f"/_erp/v1/tenants/{tenant}/objects/order/{order}",
                       {"tenant_id": tenant, "title": "x", "participants": [a, stranger]})
    # Another tenant's user is as unknown here as one that does not exist.
    assert status == 404 and body["unknown_participants"] == [stranger]
    assert env.hs.resolve(f"#_erp_order_{order}:{SERVER}", bot_of(tenant)) is None
    status, _ = env.erp.request("GET", f"/_erp/v1/tenants/{tenant}/objects/order/{order}/messages")
    assert status == 404

    # A user cannot move tenants; an object's body cannot name another tenant than its path.
    status, body = put(env, f"/_erp/v1/users/{a}", {"tenant_id": other, "display_name": "A", "active": True})
    assert status == 409
    status, body = put(env, f"/_erp/v1/tenants/{other}/users/{a}", {"display_name": "A", "active": True})
    assert status == 409
    status, _ = put(env, f"/_erp/v1/tenants/{tenant}/objects/order/{order}", {"tenant_id": tenant, "title": "x"})
    assert status == 200
    status, body = put(env, f"/_erp/v1/tenants/{tenant}/objects/order/{order}", {"tenant_id": other, "title": "x"})
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"


def test_unknown_paths(env):
    status, body = env.erp.request("GET", "/_erp/v1/nothing-here")
    assert status == 404 and body["errcode"] == "M_UNRECOGNIZED"
    status, body = env.erp.request("POST", "/_erp/v1/tenants/x")
    assert status == 405 and body["errcode"] == "M_UNRECOGNIZED"


def test_element_login_page_is_served(env):
    import urllib.request
    with urllib.request.urlopen(env.bridge.base_url + "/erp-login.html", timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/html")
        assert b"mx_sso_hs_url" in resp.read()
