"""Registration, login, logout, whoami, password change and deactivation."""
from __future__ import annotations

from client_api import uia
from client_api.http import Req, Router, access_token_of
from homeserver.async_utils import Coalescer
from client_api.admin_auth import origin_of
from homeserver.deactivation import deactivate_user
from homeserver.errors import MatrixError, forbidden, missing_param
from storage import accounts as accounts_store
from storage import admin_users as admin_users_store


def _opt_str(body: dict, key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise MatrixError(400, "M_BAD_JSON", f"{key} must be a string")
    return value


# What a registration request may ask for; kept with its UIA session, so a client may
# continue with only `auth`. The password is kept only as a hash, in the session's data.
_REGISTRATION_PARAMS = ("username", "device_id", "initial_device_display_name", "inhibit_login")
_registering = Coalescer()  # one completion per UIA session at a time


def _registration_params(body: dict) -> dict:
    params = {k: body[k] for k in _REGISTRATION_PARAMS if k in body}
    for key in ("username", "device_id", "initial_device_display_name"):
        value = _opt_str(params, key)
        if value is not None and "\x00" in value:
            raise MatrixError(400, "M_INVALID_PARAM", "NUL characters are not allowed")
    return params


async def register_account(req: Req):
    body = req.json(allow_empty=True)
    if req.query("kind", "user") == "guest":
        return await _register_guest(req, body)
    password = _opt_str(body, "password")
    if password is not None and "\x00" in password:
        raise MatrixError(400, "M_INVALID_PARAM", "NUL characters are not allowed")
    params = _registration_params(body)
    auth = body.get("auth")
    as_login = body.get("type") == "m.login.application_service" or (
        isinstance(auth, dict) and auth.get("type") == "m.login.application_service")
    reg = await _appservice_of_request(req) if as_login else None
    if reg is None and not req.hs.config.registration.enabled:
        raise forbidden("registration is disabled")
    if reg is None:  # refused early; taken when an account is really created
        req.hs.ratelimiter.check_key("rc_registration", req.client_ip, req.hs.config.rc_registration, take=False)
    if reg is not None:
        user_id = await _checked_user_id(req, params.get("username"), reg)
        if user_id is None:
            raise MatrixError(400, "M_MISSING_PARAM", "application services must choose a username")
        await req.hs.accounts.register(_localpart(req, user_id), None, appservice_id=reg.id)
        return await _registered(req, user_id, params)
    guest = await _upgrading_guest(req, body)
    if guest is not None:
        return await _upgrade_guest(req, guest, params, password)
    session_id = auth.get("session") if isinstance(auth, dict) else None
    if not isinstance(session_id, str):
        return await _register_with_uia(req, params, password)
    # Concurrent completions of one session share one outcome; later ones read it back.
    return await _registering.run(session_id, lambda: _register_with_uia(req, params, password))


async def _register_with_uia(req: Req, params: dict, password: str | None):
    sess = await uia.session(req, None, params)
    user_id = sess.data.get("registered_user_id")
    if user_id is None:  # else this session registered its user already: log in again
        chosen = await _checked_user_id(req, sess.params.get("username"), None)
        if password:
            sess.data["password_hash"] = await req.hs.accounts.hash_password(password)
        await uia.require(req, sess, [["m.login.dummy"]])
        req.hs.ratelimiter.check_key("rc_registration", req.client_ip, req.hs.config.rc_registration)
        localpart = _localpart(req, chosen) if chosen else await _generate_localpart(req)
        user_id = await req.hs.accounts.register(localpart, None,
                                                 password_hash=sess.data.get("password_hash"))
        if sess.stored:
            sess.data["registered_user_id"] = user_id
            await uia.save(req, sess)
    return await _registered(req, user_id, sess.params)


async def _checked_user_id(req: Req, username: str | None, reg) -> str | None:
    """The user id a registration asks for, checked to be valid and free."""
    if username is None:
        return None
    username = username.lower()
    req.hs.accounts.check_localpart(username)
    user_id = req.hs.accounts.user_id_for(username)
    _check_namespace(req, user_id, reg)
    if await req.hs.db.run(accounts_store.user_exists, user_id):
        raise MatrixError(400, "M_USER_IN_USE", "that user id is taken")
    return user_id


def _localpart(req: Req, user_id: str) -> str:
    return user_id[1:-len(req.hs.server_name) - 1]


async def _registered(req: Req, user_id: str, params: dict) -> dict:
    result = {"user_id": user_id, "home_server": req.hs.server_name}
    if params.get("inhibit_login") is True:
        return result
    token, device_id = await req.hs.accounts.new_session(
        user_id, params.get("device_id"), params.get("initial_device_display_name"))
    result.update(access_token=token, device_id=device_id)
    return result


async def _register_guest(req: Req, body: dict):
    """A guest account: no credentials; every parameter but the device display name is
    ignored and the server picks the ids (spec)."""
    if not req.hs.config.guest_access.enabled:
        raise MatrixError(403, "M_GUEST_ACCESS_FORBIDDEN", "guest access is disabled")
    display_name = _opt_str(body, "initial_device_display_name")
    if display_name is not None and "\x00" in display_name:
        raise MatrixError(400, "M_INVALID_PARAM", "NUL characters are not allowed")
    req.hs.ratelimiter.check_key("rc_registration", req.client_ip, req.hs.config.rc_registration)
    user_id = await req.hs.accounts.register(await _generate_localpart(req), None, guest=True)
    token, device_id = await req.hs.accounts.new_session(user_id, None, display_name)
    return {"user_id": user_id, "home_server": req.hs.server_name, "access_token": token, "device_id": device_id}


async def _upgrading_guest(req: Req, body: dict):
    """The guest whose access token comes with this registration (`guest_access_token`, or
    the request's own token), if any: it becomes a full account."""
    token = _opt_str(body, "guest_access_token")
    if token is not None:
        owner = await req.hs.accounts.owner_of_token(token)
        if owner is None or not owner.is_guest or owner.deactivated:
            raise forbidden("guest_access_token is not a guest's access token")
        return owner
    try:
        token = access_token_of(req)
    except MatrixError:  # registration never needed a token: a malformed header is ignored
        return None
    owner = await req.hs.accounts.owner_of_token(token) if token else None
    return owner if owner is not None and owner.is_guest and not owner.deactivated else None


async def _upgrade_guest(req: Req, guest, params: dict, password: str | None):
    """Registering with a guest's access token keeps the guest's user id (spec: the
    username, if given, must be the guest's localpart)."""
    localpart = guest.user_id[1:].split(":", 1)[0]
    username = params.get("username")
    if username is not None and username.lower() != localpart:
        raise forbidden(f"a guest keeps its user id: username must be {localpart!r}")
    sess = await uia.session(req, guest.user_id, params)
    await uia.require(req, sess, [["m.login.dummy"]])
    await req.hs.accounts.upgrade_guest(guest.user_id, password)
    return await _registered(req, guest.user_id, sess.params)


async def _appservice_of_request(req: Req):
    """The registration whose as_token the request carries, else 401."""
    token = access_token_of(req)
    appservices = getattr(req.hs, "appservices", None)
    reg = appservices.by_token(token) if (token and appservices is not None) else None
    if reg is None:
        raise MatrixError(401, "M_UNKNOWN_TOKEN", "m.login.application_service needs an application service token")
    return reg


def _check_namespace(req: Req, user_id: str, reg) -> None:
    """Exclusive namespaces belong to their service: nobody else may take those ids, and a
    service may only take ids in its own namespace."""
    appservices = getattr(req.hs, "appservices", None)
    if appservices is None:
        return
    if reg is not None:
        if not appservices.may_act_as(reg, user_id):
            raise MatrixError(400, "M_EXCLUSIVE", "that user id is not in the application service's namespace")
        return
    if appservices.exclusive_user_owner(user_id) is not None:
        raise MatrixError(400, "M_EXCLUSIVE", "that user id is reserved by an application service")


async def _generate_localpart(req: Req) -> str:
    import secrets
    for _ in range(10):
        candidate = str(secrets.randbelow(10**9))
        if not await req.hs.db.run(accounts_store.user_exists, req.hs.accounts.user_id_for(candidate)):
            return candidate
    raise MatrixError(500, "M_UNKNOWN", "could not generate a user id")


async def register_available(req: Req):
    username = req.query("username")
    if not username:
        raise missing_param("username is required")
    req.hs.accounts.check_localpart(username)
    if await req.hs.db.run(accounts_store.user_exists, req.hs.accounts.user_id_for(username)):
        raise MatrixError(400, "M_USER_IN_USE", "that user id is taken")
    return {"available": True}


async def login_flows(req: Req):
    return {"flows": [{"type": "m.login.password"}, {"type": "m.login.token"},
                      {"type": "m.login.application_service"}]}


async def login(req: Req):
    body = req.json()
    login_type = body.get("type")
    limits = req.hs.config.rc_login
    if login_type != "m.login.application_service":
        req.hs.ratelimiter.check_key("rc_login_address", req.client_ip, limits.address)
    if login_type == "m.login.password":
        user_id = await _password_login(req, body)
    elif login_type == "m.login.token":
        token = body.get("token")
        if not isinstance(token, str) or not token:
            raise missing_param("token is required")
        user_id = await req.hs.accounts.use_login_token(token)
        if user_id is None:
            await req.hs.audit.record("login.failed", origin_of(req, actor=None), login_type="m.login.token")
            raise forbidden("invalid or expired login token")
    elif login_type == "m.login.application_service":
        reg = await _appservice_of_request(req)
        user_id = req.hs.accounts.user_id_for(_identifier_user(body))
        if not req.hs.appservices.may_act_as(reg, user_id):
            raise MatrixError(400, "M_EXCLUSIVE", "that user is not in the application service's namespace")
        await req.hs.accounts.require_active_user(user_id)
    else:
        raise MatrixError(400, "M_UNKNOWN", f"login type {login_type!r} is not supported")
    if login_type != "m.login.application_service":
        req.hs.ratelimiter.check_key("rc_login_account", user_id.lower(), limits.account)
    token, device_id = await req.hs.accounts.new_session(
        user_id, _opt_str(body, "device_id"), _opt_str(body, "initial_device_display_name"))
    await req.hs.audit.record("login", origin_of(req, actor=user_id), target_user=user_id,
                              login_type=login_type, device_id=device_id)
    return {"user_id": user_id, "access_token": token, "device_id": device_id,
            "home_server": req.hs.server_name,
            "well_known": {"m.homeserver": {"base_url": req.hs.config.public_baseurl.rstrip("/")}}}


def _identifier_user(body: dict) -> str:
    identifier = body.get("identifier")
    if isinstance(identifier, dict):
        if identifier.get("type") != "m.id.user":
            raise MatrixError(400, "M_UNKNOWN", "only m.id.user identifiers are supported")
        user = identifier.get("user")
    else:
        user = body.get("user")  # the deprecated top-level form older clients send
    if not isinstance(user, str) or not user:
        raise missing_param("identifier.user is required")
    return user


async def _password_login(req: Req, body: dict) -> str:
    user = _identifier_user(body)
    password = body.get("password")
    if not isinstance(password, str):
        raise missing_param("password is required")
    user_id = req.hs.accounts.user_id_for(user)
    failed = req.hs.config.rc_login.failed_attempts
    req.hs.ratelimiter.check_key("rc_login_failed", user_id.lower(), failed, take=False)
    if not await req.hs.accounts.check_password(user_id, password):
        await req.hs.audit.record("login.failed", origin_of(req, actor=None), target_user=user_id,
                                  login_type="m.login.password")
        req.hs.ratelimiter.check_key("rc_login_failed", user_id.lower(), failed)  # counts this one
        raise forbidden("invalid username or password")
    return user_id


async def get_login_token(req: Req):
    """A one-time m.login.token for the requester (MSC3882, v1.7). Users re-enter their
    password; an application service acting for one of its users does not."""
    if req.requester.app_service is None:
        await uia.require_password(req, req.user_id)
    token, ttl = await req.hs.accounts.create_login_token(req.user_id)
    return {"login_token": token, "expires_in_ms": ttl}


async def logout(req: Req):
    await req.hs.accounts.logout(req.requester.access_token)
    return {}


async def logout_all(req: Req):
    await req.hs.accounts.logout_all(req.user_id)
    # Tokens this user made as an admin ("login as user") end with their own sessions.
    req.hs.accounts.forget_tokens(await req.hs.db.run(admin_users_store.delete_puppet_tokens_by, req.user_id))
    return {}


async def whoami(req: Req):
    return {"user_id": req.user_id, "device_id": req.requester.device_id, "is_guest": req.requester.is_guest}


async def change_password(req: Req):
    body = req.json()
    await uia.require_password(req, req.user_id)
    new_password = body.get("new_password")
    if not isinstance(new_password, str) or not new_password:
        raise missing_param("new_password is required")
    pw_hash = await req.hs.accounts.hash_password(new_password)
    await req.hs.db.run(accounts_store.set_password_hash, req.user_id, pw_hash)
    if body.get("logout_devices", True) is not False:
        await req.hs.accounts.logout_all(req.user_id, except_device=req.requester.device_id)
    return {}


async def deactivate(req: Req):
    await uia.require_password(req, req.user_id)
    body = req.json(allow_empty=True)
    erase = body.get("erase", False)
    if not isinstance(erase, bool):
        raise MatrixError(400, "M_BAD_JSON", "erase must be a boolean")
    await deactivate_user(req.hs, req.user_id, erase)
    await req.hs.audit.record("deactivate", origin_of(req), target_user=req.user_id, erase=erase)
    return {"id_server_unbind_result": "no-support"}


def register(router: Router) -> None:
    router.client("POST", "/register", register_account, auth=False)
    router.client("GET", "/register/available", register_available, auth=False)
    router.client("GET", "/login", login_flows, auth=False)
    router.client("POST", "/login", login, auth=False)
    router.client("POST", "/logout", logout)
    router.client("POST", "/logout/all", logout_all)
    router.client("GET", "/account/whoami", whoami)
    router.client("POST", "/account/password", change_password)
    router.client("POST", "/account/deactivate", deactivate)
    router.add("POST", "/_matrix/client/v1/login/get_token", get_login_token)
