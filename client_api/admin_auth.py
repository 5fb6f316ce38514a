"""Who may use the admin APIs, and over what.

Server admins (`users.is_admin`) manage everything. A tenant admin (`users.admin_tenant`
set by a server admin) manages only the users and rooms of that tenant: everything
else answers exactly as if it did not exist (the same 404 a missing user or room gets),
and lists leave it out. Anyone else gets 403 M_FORBIDDEN, as Synapse answers non-admins."""
from __future__ import annotations

from dataclasses import dataclass

from client_api.http import Req
from homeserver.audit import Origin
from homeserver.errors import MatrixError, forbidden
from homeserver.ids import is_valid_room_id, is_valid_user_id
from storage import admin_rooms as admin_rooms_store
from storage import admin_users as admin_users_store

USER_NOT_FOUND = "User not found"
ROOM_NOT_FOUND = "Room not found"


def origin_of(req: Req, actor: str | None | object = ...) -> Origin:
    ua = req.headers.getRawHeaders(b"user-agent")
    if actor is ...:
        actor = req.requester.user_id if req.requester else None
    return Origin(actor, req.client_ip or None,  # type: ignore[arg-type]
                  ua[0][:512].decode("utf-8", "replace") if ua else None)


@dataclass
class AdminScope:
    user_id: str
    tenant: str | None  # the tenant a tenant admin manages; None for a server admin
    server_admin: bool

    def covers(self, tenant_id: str | None) -> bool:
        return self.server_admin or tenant_id == self.tenant

    async def user(self, req: Req, user_id: str) -> dict:
        """The local user's admin row, or 404 as for a user that does not exist."""
        if not is_valid_user_id(user_id) or "\x00" in user_id:
            raise MatrixError(400, "M_INVALID_PARAM", f"{user_id!r} is not a valid user id")
        if not req.hs.accounts.is_mine(user_id):
            raise MatrixError(400, "M_UNKNOWN", "Can only look up local users")
        row = await req.hs.db.run(admin_users_store.get_user, user_id)
        if row is None or not self.covers(row["tenant_id"]):
            raise MatrixError(404, "M_NOT_FOUND", USER_NOT_FOUND)
        return row

    async def room(self, req: Req, room_id: str) -> str | None:
        """The room's tenant; 404 for a room that does not exist or is out of scope."""
        check_room_id(room_id)
        exists, tenant = await req.hs.db.run(admin_rooms_store.room_tenant, room_id)
        if not exists or not self.covers(tenant):
            raise MatrixError(404, "M_NOT_FOUND", ROOM_NOT_FOUND)
        return tenant


def check_room_id(room_id: str) -> None:
    if not is_valid_room_id(room_id) or "\x00" in room_id:
        raise MatrixError(400, "M_INVALID_PARAM", f"{room_id} is not a legal room ID")


async def require_admin(req: Req) -> AdminScope:
    requester = req.requester
    assert requester is not None
    if requester.app_service is None and not requester.is_guest:
        if requester.is_admin:
            return AdminScope(requester.user_id, None, True)
        tenant = await req.hs.db.run(admin_users_store.admin_tenant, requester.user_id)
        if tenant is not None:
            return AdminScope(requester.user_id, tenant, False)
    raise forbidden("You are not a server admin")


async def require_server_admin(req: Req) -> AdminScope:
    scope = await require_admin(req)
    if not scope.server_admin:
        raise forbidden("only server admins may do this")
    return scope


# ---- query parameters as Synapse parses them ------------------------------------------

def query_bool(req: Req, name: str, default: bool | None = None) -> bool | None:
    value = req.query(name)
    if value is None:
        return default
    if value not in ("true", "false"):
        raise MatrixError(400, "M_INVALID_PARAM", f"Boolean query parameter {name!r} must be one of ['true', 'false']")
    return value == "true"


def query_count(req: Req, name: str, default: int) -> int:
    value = req.query_int(name, default)
    assert value is not None
    if value < 0:
        raise MatrixError(400, "M_INVALID_PARAM", f"Query parameter {name!r} must be a positive integer.")
    return value


def query_choice(req: Req, name: str, default: str, allowed) -> str:
    value = req.query(name, default)
    assert value is not None
    if value not in allowed:
        raise MatrixError(400, "M_INVALID_PARAM",
                          f"Query parameter {name!r} must be one of [{', '.join(repr(a) for a in allowed)}]")
    return value


def query_dir(req: Req, default: str = "f") -> bool:
    """True for backwards."""
    return query_choice(req, "dir", default, ("f", "b")) == "b"
