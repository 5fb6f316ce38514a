"""Our admin API (`/_homeserver/admin/v1`): a user's tenant, and a user's own rate limit.
Server admins may set any user's tenant; an application service may set it for users in
its namespace. Rate-limit overrides are for server admins only."""
from __future__ import annotations

from client_api.http import Req, Router
from homeserver.errors import MatrixError, forbidden

ADMIN_PREFIX = "/_homeserver/admin/v1"


def _may_manage(req: Req, user_id: str) -> None:
    reg = req.requester.app_service
    if reg is not None and req.hs.appservices.may_act_as(reg, user_id):
        return
    if reg is None and req.requester.is_admin:
        return
    raise forbidden("only server admins, or an application service for its own users, may do this")


async def get_tenant(req: Req, user_id: str):
    _may_manage(req, user_id)
    if not req.hs.accounts.is_mine(user_id):
        raise MatrixError(400, "M_INVALID_PARAM", "not a local user")
    await req.hs.accounts.require_active_user(user_id)
    return {"tenant_id": await req.hs.tenancy.tenant_of(user_id)}


async def put_tenant(req: Req, user_id: str):
    _may_manage(req, user_id)
    body = req.json()
    tenant_id = body.get("tenant_id")
    if tenant_id is not None and not isinstance(tenant_id, str):
        raise MatrixError(400, "M_BAD_JSON", "tenant_id must be a string or null")
    await req.hs.tenancy.set_tenant(user_id, tenant_id)
    return {"tenant_id": tenant_id}


async def _overridable_user(req: Req, user_id: str) -> None:
    if req.requester.app_service is not None or not req.requester.is_admin:
        raise forbidden("only server admins may do this")
    if not req.hs.accounts.is_mine(user_id):
        raise MatrixError(400, "M_INVALID_PARAM", "not a local user")
    await req.hs.accounts.require_active_user(user_id)


async def get_ratelimit(req: Req, user_id: str):
    await _overridable_user(req, user_id)
    override = await req.hs.ratelimiter.get_override(user_id)
    if override is None:
        return {}
    return {"messages_per_second": override[0], "burst_count": override[1]}


def _rate_number(body: dict, key: str) -> float:
    value = body.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value > 1e9:
        raise MatrixError(400, "M_INVALID_PARAM", f"{key} must be a number from 0 to 1e9")
    return value


async def put_ratelimit(req: Req, user_id: str):
    """Like Synapse's override_ratelimit: the user's own rate for messages, joins, invites
    sent and media; 0 and 0 lift every limit for the user."""
    await _overridable_user(req, user_id)
    body = req.json()
    per_second, burst = _rate_number(body, "messages_per_second"), _rate_number(body, "burst_count")
    await req.hs.ratelimiter.set_override(user_id, per_second, burst)
    return {"messages_per_second": per_second, "burst_count": burst}


async def delete_ratelimit(req: Req, user_id: str):
    await _overridable_user(req, user_id)
    await req.hs.ratelimiter.delete_override(user_id)
    return {}


def register(router: Router) -> None:
    router.add("GET", ADMIN_PREFIX + "/users/{user_id}/ratelimit", get_ratelimit)
    router.add("PUT", ADMIN_PREFIX + "/users/{user_id}/ratelimit", put_ratelimit)
    router.add("DELETE", ADMIN_PREFIX + "/users/{user_id}/ratelimit", delete_ratelimit)
    router.add("GET", ADMIN_PREFIX + "/users/{user_id}/tenant", get_tenant)
    router.add("PUT", ADMIN_PREFIX + "/users/{user_id}/tenant", put_tenant)
