"""Synapse's admin API for users (`/_synapse/admin/...`), so synapse-admin and scripts
written for Synapse work: shared-secret registration, server version, users v2 (list,
query, create/modify), deactivate (with erase), whois, login as a user, a user's rooms
and devices, admin flag, password reset. Paths, parameters and response shapes follow
Synapse's; the differences are listed in docs/operations.md. Every call is audited."""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from client_api.admin_auth import SYNAPSE_V1 as V1
from client_api.admin_auth import SYNAPSE_V2 as V2
from client_api.admin_auth import AdminScope, origin_of, require_admin, require_server_admin
from client_api.admin_auth import next_offset, offset_page, query_bool, query_choice, query_dir
from client_api.http import Req, Router
from homeserver.accounts import hash_token, new_access_token
from homeserver.deactivation import deactivate_user
from homeserver.errors import MatrixError, bad_json, forbidden, not_found
from storage import accounts as accounts_store
from storage import admin_users as admin_users_store

SERVER_VERSION = "erp-homeserver 0.1.0"
NONCE_TIMEOUT_S = 60
_nonces: dict[str, float] = {}  # nonce -> when it was handed out


async def server_version(req: Req):
    return {"server_version": SERVER_VERSION}


# ---- shared-secret registration ------------------------------------------------------

def _clear_old_nonces() -> None:
    now = time.time()
    for nonce, issued in list(_nonces.items()):
        if now - issued > NONCE_TIMEOUT_S:
            del _nonces[nonce]


async def register_nonce(req: Req):
    _clear_old_nonces()
    nonce = secrets.token_hex(64)
    _nonces[nonce] = time.time()
    return {"nonce": nonce}


def _bounded_text(body: dict, key: str, what: str) -> bytes:
    if key not in body:
        raise MatrixError(400, "M_BAD_JSON", f"{key} must be specified")
    value = body[key]
    if not isinstance(value, str) or len(value) > 512 or "\x00" in value:
        raise MatrixError(400, "M_UNKNOWN", f"Invalid {what}")
    return value.encode("utf-8")


async def register_with_secret(req: Req):
    """The nonce + HMAC-SHA1 exchange of Synapse's register_new_matrix_user script."""
    _clear_old_nonces()
    secret = req.hs.config.registration.shared_secret
    if not secret:
        raise MatrixError(400, "M_UNKNOWN", "Shared secret registration is not enabled")
    body = req.json()
    nonce = body.get("nonce")
    if nonce is None:
        raise MatrixError(400, "M_BAD_JSON", "nonce must be specified")
    if not isinstance(nonce, str) or nonce not in _nonces:
        raise MatrixError(400, "M_UNKNOWN", "unrecognised nonce")
    del _nonces[nonce]  # one use, even when the rest is wrong
    username = _bounded_text(body, "username", "username")
    password = _bounded_text(body, "password", "password")
    admin = body.get("admin")
    user_type = body.get("user_type")
    if user_type is not None:
        raise MatrixError(400, "M_UNKNOWN", "Invalid user type")  # we have no user types
    displayname = body.get("displayname")
    if displayname is not None and not isinstance(displayname, str):
        raise bad_json("displayname must be a string")
    got_mac = body.get("mac")
    if got_mac is None:
        raise MatrixError(400, "M_BAD_JSON", "mac must be specified")
    want = hmac.new(secret.encode(), digestmod=hashlib.sha1)
    for part in (nonce.encode("utf8"), b"\x00", username, b"\x00", password, b"\x00",
                 b"admin" if admin else b"notadmin"):
        want.update(part)
    if not isinstance(got_mac, str) or not hmac.compare_digest(want.hexdigest().encode("ascii"),
                                                               got_mac.encode("ascii", "replace")):
        await req.hs.audit.record("register.shared_secret.failed", origin_of(req, actor=None),
                                  username=username.decode("utf-8"))
        raise forbidden("HMAC incorrect")
    localpart = username.decode("utf-8").lower()
    user_id = await req.hs.accounts.register(localpart, password.decode("utf-8"), admin=bool(admin),
                                             displayname=displayname)
    await req.hs.audit.record("register.shared_secret", origin_of(req, actor=None), target_user=user_id,
                              admin=bool(admin))
    if body.get("inhibit_login") is True:
        return {"user_id": user_id, "home_server": req.hs.server_name}
    token, device_id = await req.hs.accounts.new_session(user_id, None, None)
    return {"user_id": user_id, "home_server": req.hs.server_name, "access_token": token,
            "device_id": device_id}


# ---- users ----------------------------------------------------------------------------

async def list_users(req: Req):
    scope = await require_admin(req)
    start, limit = offset_page(req)
    order_by = query_choice(req, "order_by", "name", admin_users_store.USER_ORDER)
    backwards = query_dir(req)
    users, total = await req.hs.db.run(
        admin_users_store.list_users, start, limit, req.query("user_id"), req.query("name"),
        query_bool(req, "guests", True), None if query_bool(req, "deactivated") else False,
        query_bool(req, "admins"), order_by, backwards, scope.tenant, not scope.server_admin)
    result: dict = {"users": users, "total": total}
    after = next_offset(start, limit, len(users), total)
    if after is not None:
        result["next_token"] = str(after)
    return result


def _user_json(row: dict) -> dict:
    return {
        "name": row["name"], "displayname": row["displayname"], "threepids": [],
        "avatar_url": row["avatar_url"], "is_guest": row["is_guest"], "admin": row["admin"],
        "deactivated": row["deactivated"], "erased": row["erased"], "shadow_banned": False,
        "creation_ts": row["created_ts"] // 1000,  # seconds here, as Synapse's query answers
        "last_seen_ts": row["last_seen_ts"], "appservice_id": row["appservice_id"],
        "consent_server_notice_sent": None, "consent_version": None, "consent_ts": None,
        "external_ids": [], "user_type": None, "locked": False, "suspended": False,
        "io.erpchat.tenant_id": row["tenant_id"], "io.erpchat.admin_tenant": row["admin_tenant"],
    }


async def get_user(req: Req, user_id: str):
    scope = await require_admin(req)
    return _user_json(await scope.user(req, user_id))


def _opt_type(body: dict, key: str, kind: type, what: str):
    value = body.get(key)
    if value is not None and not isinstance(value, kind):
        raise MatrixError(400, "M_BAD_JSON", f"'{key}' parameter is not of type {what}")
    return value


async def put_user(req: Req, user_id: str):
    scope = await require_admin(req)
    body = req.json()
    if not req.hs.accounts.is_mine(user_id):
        raise MatrixError(400, "M_UNKNOWN", "This endpoint can only be used with local users")
    password = body.get("password")
    if password is not None and (not isinstance(password, str) or len(password) > 512 or "\x00" in password):
        raise MatrixError(400, "M_UNKNOWN", "Invalid password")
    logout_devices = _opt_type(body, "logout_devices", bool, "boolean")
    deactivate = _opt_type(body, "deactivated", bool, "boolean")
    admin = _opt_type(body, "admin", bool, "boolean")
    if _opt_type(body, "locked", bool, "boolean"):
        raise MatrixError(400, "M_INVALID_PARAM", "locking accounts is not supported by this server")
    if body.get("user_type") is not None:
        raise MatrixError(400, "M_UNKNOWN", "Invalid user type")
    for key in ("displayname", "avatar_url"):
        if key in body and body[key] is not None and not isinstance(body[key], str):
            raise bad_json(f"{key} must be a string")
    if admin and not scope.server_admin:
        raise forbidden("only server admins may make server admins")
    existing = await req.hs.db.run(admin_users_store.get_user, user_id)
    if existing is not None and not scope.covers(existing["tenant_id"]):
        raise not_found("User not found")  # another tenant's user: as if missing (so it cannot be created either)
    origin = origin_of(req)
    if existing is None:
        localpart = user_id[1:].split(":", 1)[0]
        await req.hs.accounts.register(localpart, password, admin=bool(admin),
                                       displayname=body.get("displayname") or None)
        if not scope.server_admin:
            await req.hs.tenancy.set_tenant(user_id, scope.tenant)
        if body.get("avatar_url"):
            await req.hs.profiles.set_field(user_id, "avatar_url", body["avatar_url"])
        await req.hs.audit.record("user.create", origin, target_user=user_id, admin=bool(admin))
        return 201, _user_json(await scope.user(req, user_id))
    if existing["admin"] and not scope.server_admin:
        raise forbidden("only server admins may change a server admin")
    changed: list[str] = []
    for key in ("displayname", "avatar_url"):
        if key in body and body[key] != existing[key]:
            await req.hs.profiles.set_field(user_id, key, body[key] or None)
            changed.append(key)
    if admin is not None and admin != existing["admin"]:
        if user_id == req.user_id and not admin:
            raise MatrixError(400, "M_UNKNOWN", "You may not demote yourself.")
        await req.hs.accounts.set_admin(user_id, admin)
        changed.append("admin")
    if password is not None:
        await _set_password(req, user_id, password, logout_devices is not False)
        changed.append("password")
    if deactivate is True and not existing["deactivated"]:
        await deactivate_user(req.hs, user_id)
        changed.append("deactivated")
    elif deactivate is False and existing["deactivated"]:
        await req.hs.db.run(admin_users_store.reactivate, user_id)
        changed.append("reactivated")
    await req.hs.audit.record("user.modify", origin, target_user=user_id, changed=changed)
    return _user_json(await scope.user(req, user_id))


async def _set_password(req: Req, user_id: str, password: str, logout_devices: bool) -> None:
    pw_hash = await req.hs.accounts.hash_password(password)
    await req.hs.db.run(accounts_store.set_password_hash, user_id, pw_hash)
    if logout_devices:
        await req.hs.accounts.logout_all(user_id)


async def reset_password(req: Req, user_id: str):
    scope = await require_admin(req)
    row = await scope.user(req, user_id)
    if row["admin"] and not scope.server_admin:
        raise forbidden("only server admins may change a server admin")
    body = req.json()
    password = body.get("new_password")
    if not isinstance(password, str) or not password or len(password) > 512 or "\x00" in password:
        raise MatrixError(400, "M_MISSING_PARAM", "new_password is required")
    logout = body.get("logout_devices", True)
    if not isinstance(logout, bool):
        raise bad_json("logout_devices must be a boolean")
    await _set_password(req, user_id, password, logout)
    await req.hs.audit.record("user.reset_password", origin_of(req), target_user=user_id)
    return {}


async def deactivate(req: Req, user_id: str):
    scope = await require_admin(req)
    row = await scope.user(req, user_id)
    if row["admin"] and not scope.server_admin:
        raise forbidden("only server admins may deactivate a server admin")
    body = req.json(allow_empty=True)
    erase = body.get("erase", False)
    if not isinstance(erase, bool):
        raise MatrixError(400, "M_BAD_JSON", "Param 'erase' must be a boolean, if given")
    await deactivate_user(req.hs, user_id, erase)
    await req.hs.audit.record("user.deactivate", origin_of(req), target_user=user_id, erase=erase)
    return {"id_server_unbind_result": "no-support"}


async def whois(req: Req, user_id: str):
    scope = await require_admin(req)
    await scope.user(req, user_id)
    return await _whois(req, user_id)


async def _whois(req: Req, user_id: str) -> dict:
    devices = {d["device_id"]: (d["last_seen_ip"], d["last_seen_user_agent"], d["last_seen_ts"])
               for d in await req.hs.db.run(admin_users_store.devices, user_id)}
    devices.update(req.hs.client_ips.pending_for(user_id))
    return {"user_id": user_id, "devices": {
        device_id: {"sessions": [{"connections": [{"ip": ip, "last_seen": ts, "user_agent": ua}]
                                                 if ts is not None else []}]}
        for device_id, (ip, ua, ts) in devices.items()}}


async def client_whois(req: Req, user_id: str):
    """The spec's GET /admin/whois: server admins, and users about themselves."""
    if user_id != req.user_id:
        scope = await require_admin(req)
        await scope.user(req, user_id)
    return await _whois(req, user_id)


async def login_as(req: Req, user_id: str):
    scope = await require_admin(req)
    row = await scope.user(req, user_id)
    if user_id == req.user_id:
        raise MatrixError(400, "M_UNKNOWN", "Cannot use admin API to login as self")
    if row["admin"] and not scope.server_admin:
        raise forbidden("only server admins may log in as a server admin")
    if row["deactivated"]:
        raise MatrixError(400, "M_UNKNOWN", "the user is deactivated")
    body = req.json(allow_empty=True)
    valid_until = body.get("valid_until_ms")
    if valid_until is not None and (type(valid_until) is not int or valid_until <= time.time() * 1000):
        raise MatrixError(400, "M_INVALID_PARAM", "valid_until_ms must be a timestamp in the future")
    token = new_access_token(user_id)
    await req.hs.db.run(admin_users_store.add_puppet_token, hash_token(token), user_id, req.user_id,
                        int(time.time() * 1000), valid_until)
    await req.hs.audit.record("user.login_as", origin_of(req), target_user=user_id, valid_until_ms=valid_until)
    return {"access_token": token}


async def joined_rooms(req: Req, user_id: str):
    scope = await require_admin(req)
    await scope.user(req, user_id)
    rooms = sorted(r for r, m in (await req.hs.db.run(admin_users_store.memberships, user_id)).items()
                   if m == "join")
    return {"joined_rooms": rooms, "total": len(rooms)}


async def memberships(req: Req, user_id: str):
    scope = await require_admin(req)
    await scope.user(req, user_id)
    return {"memberships": await req.hs.db.run(admin_users_store.memberships, user_id)}


async def get_admin(req: Req, user_id: str):
    scope = await require_admin(req)
    row = await scope.user(req, user_id)
    return {"admin": row["admin"]}


async def put_admin(req: Req, user_id: str):
    scope = await require_server_admin(req)
    await scope.user(req, user_id)
    body = req.json()
    admin = body.get("admin")
    if not isinstance(admin, bool):
        raise MatrixError(400, "M_MISSING_PARAM", "Missing 'admin' (a boolean) in the body")
    if user_id == req.user_id and not admin:
        raise MatrixError(400, "M_UNKNOWN", "You may not demote yourself.")
    await req.hs.accounts.set_admin(user_id, admin)
    await req.hs.audit.record("user.set_admin", origin_of(req), target_user=user_id, admin=admin)
    return {}


# ---- devices --------------------------------------------------------------------------

async def _devices_of(req: Req, user_id: str) -> tuple[AdminScope, list[dict]]:
    scope = await require_admin(req)
    await scope.user(req, user_id)
    return scope, await req.hs.db.run(admin_users_store.devices, user_id)


async def list_devices(req: Req, user_id: str):
    _, devices = await _devices_of(req, user_id)
    return {"devices": [dict(d, dehydrated=False) for d in devices], "total": len(devices)}


async def _device(req: Req, user_id: str, device_id: str) -> dict:
    _, devices = await _devices_of(req, user_id)
    for d in devices:
        if d["device_id"] == device_id:
            return d
    raise not_found("Device not found")


async def get_device(req: Req, user_id: str, device_id: str):
    return await _device(req, user_id, device_id)


async def put_device(req: Req, user_id: str, device_id: str):
    await _device(req, user_id, device_id)
    name = req.json().get("display_name")
    if name is not None:
        if not isinstance(name, str) or len(name) > 100 or "\x00" in name:
            raise MatrixError(400, "M_INVALID_PARAM", "display_name must be a string of at most 100 characters")
        await req.hs.accounts.rename_device(user_id, device_id, name)
    return {}


async def delete_device(req: Req, user_id: str, device_id: str):
    await _devices_of(req, user_id)  # a missing device is fine, as in Synapse
    await req.hs.accounts.delete_devices(user_id, [device_id])
    await req.hs.audit.record("user.delete_devices", origin_of(req), target_user=user_id, devices=[device_id])
    return {}


async def delete_devices(req: Req, user_id: str):
    await _devices_of(req, user_id)
    devices = req.json().get("devices")
    if not isinstance(devices, list) or not all(isinstance(d, str) for d in devices):
        raise MatrixError(400, "M_MISSING_PARAM", "devices must be a list of device ids")
    await req.hs.accounts.delete_devices(user_id, devices)
    await req.hs.audit.record("user.delete_devices", origin_of(req), target_user=user_id, devices=devices)
    return {}


def register(router: Router) -> None:
    router.add("GET", V1 + "/server_version", server_version, auth=False)
    router.add("GET", V1 + "/register", register_nonce, auth=False)
    router.add("POST", V1 + "/register", register_with_secret, auth=False)
    router.add("GET", V2 + "/users", list_users)
    router.add("GET", V2 + "/users/{user_id}", get_user)
    router.add("PUT", V2 + "/users/{user_id}", put_user)
    router.add("GET", V2 + "/users/{user_id}/devices", list_devices)
    router.add("POST", V2 + "/users/{user_id}/delete_devices", delete_devices)
    router.add("GET", V2 + "/users/{user_id}/devices/{device_id}", get_device)
    router.add("PUT", V2 + "/users/{user_id}/devices/{device_id}", put_device)
    router.add("DELETE", V2 + "/users/{user_id}/devices/{device_id}", delete_device)
    router.add("POST", V1 + "/deactivate/{user_id}", deactivate)
    router.add("POST", V1 + "/reset_password/{user_id}", reset_password)
    router.add("GET", V1 + "/whois/{user_id}", whois)
    router.client("GET", "/admin/whois/{user_id}", client_whois)
    router.add("POST", V1 + "/users/{user_id}/login", login_as)
    router.add("GET", V1 + "/users/{user_id}/joined_rooms", joined_rooms)
    router.add("GET", V1 + "/users/{user_id}/memberships", memberships)
    router.add("GET", V1 + "/users/{user_id}/admin", get_admin)
    router.add("PUT", V1 + "/users/{user_id}/admin", put_admin)
