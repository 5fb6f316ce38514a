"""Our admin API (`/_homeserver/admin/v1`): a user's tenant. Server admins may set any
user's tenant; an application service may set it for users in its namespace."""
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


def register(router: Router) -> None:
    router.add("GET", ADMIN_PREFIX + "/users/{user_id}/tenant", get_tenant)
    router.add("PUT", ADMIN_PREFIX + "/users/{user_id}/tenant", put_tenant)
