"""Our admin API (`/_homeserver/admin/v1`): a user's tenant (server admins, or an
application service for users in its namespace), who is a tenant admin (server admins),
a user's own rate limit (server admins), and the audit log (server admins all of it,
tenant admins their tenant's entries; as pages of JSON or exported as JSON lines)."""
from __future__ import annotations

from typing import Any, AsyncIterator

from client_api.admin_auth import origin_of, query_count, query_dir, require_admin, require_server_admin
from client_api.http import Req, Router
from client_api.streaming import JsonLines
from homeserver.errors import MatrixError, forbidden
from homeserver.tenancy import TENANT_ID_RE
from storage import admin_users as admin_users_store
from storage import audit as audit_store

ADMIN_PREFIX = "/_homeserver/admin/v1"
MAX_AUDIT_PAGE = 1000


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
    before = await req.hs.tenancy.tenant_of(user_id) if req.hs.accounts.is_mine(user_id) else None
    await req.hs.tenancy.set_tenant(user_id, tenant_id)
    await req.hs.audit.record("user.set_tenant", origin_of(req), target_user=user_id, tenant_id=tenant_id,
                              previous_tenant=before)
    return {"tenant_id": tenant_id}


async def get_admin_tenant(req: Req, user_id: str):
    await require_server_admin(req)
    row = await req.hs.db.run(admin_users_store.get_user, user_id)
    if row is None:
        raise MatrixError(404, "M_NOT_FOUND", "no such user")
    return {"admin_tenant": row["admin_tenant"]}


async def put_admin_tenant(req: Req, user_id: str):
    """Make a user the admin of a tenant (`{"admin_tenant": "acme"}`), or not (null)."""
    await require_server_admin(req)
    tenant = req.json().get("admin_tenant")
    if tenant is not None and (not isinstance(tenant, str) or not TENANT_ID_RE.match(tenant)):
        raise MatrixError(400, "M_INVALID_PARAM", "admin_tenant must be a tenant id or null")
    if not await req.hs.db.run(admin_users_store.set_admin_tenant, user_id, tenant):
        raise MatrixError(404, "M_NOT_FOUND", "no such user")
    await req.hs.audit.record("user.set_admin_tenant", origin_of(req), target_user=user_id, tenant_id=tenant)
    return {"admin_tenant": tenant}


def _audit_query(req: Req, scope) -> audit_store.AuditQuery:
    def ts(name: str) -> int | None:
        value = req.query_int(name)
        if value is not None and value < 0:
            raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be a timestamp in milliseconds")
        return value
    return audit_store.AuditQuery(
        action=req.query("action"), actor=req.query("actor"), target_user=req.query("user_id"),
        target_room=req.query("room_id"), since_ts=ts("since_ts"), until_ts=ts("until_ts"),
        tenant=scope.tenant, scoped=not scope.server_admin)


def _after(req: Req) -> int | None:
    token = req.query("from")
    if token is None:
        return None
    if not token.isascii() or not token.isdigit() or len(token) > 18:
        raise MatrixError(400, "M_INVALID_PARAM", "from must be a next_token from an earlier page")
    return int(token)


async def get_audit(req: Req):
    """A page of entries, newest first by default (`dir=f` for oldest first); pass
    `next_token` back as `from` for the next page."""
    scope = await require_admin(req)
    limit = min(query_count(req, "limit", 100), MAX_AUDIT_PAGE)
    backwards = query_dir(req, "b")
    entries = await req.hs.db.run(audit_store.page, _audit_query(req, scope), _after(req), limit, backwards)
    result: dict[str, Any] = {"entries": entries}
    if len(entries) == limit and entries:
        result["next_token"] = str(entries[-1]["id"])
    return result


async def export_audit(req: Req):
    """Every matching entry as JSON lines, oldest first (or newest first with dir=b)."""
    scope = await require_admin(req)
    query = _audit_query(req, scope)
    backwards = query_dir(req, "f")
    after = _after(req)
    await req.hs.audit.record("audit.export", origin_of(req), tenant_id=scope.tenant)

    async def pages() -> AsyncIterator[list[Any]]:
        cursor = after
        while True:
            entries = await req.hs.db.run(audit_store.page, query, cursor, MAX_AUDIT_PAGE, backwards)
            if not entries:
                return
            cursor = entries[-1]["id"]
            yield entries

    return JsonLines(pages(), filename="audit.jsonl")


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
    router.add("GET", ADMIN_PREFIX + "/users/{user_id}/admin_tenant", get_admin_tenant)
    router.add("PUT", ADMIN_PREFIX + "/users/{user_id}/admin_tenant", put_admin_tenant)
    router.add("GET", ADMIN_PREFIX + "/audit", get_audit)
    router.add("GET", ADMIN_PREFIX + "/audit/export", export_audit)
