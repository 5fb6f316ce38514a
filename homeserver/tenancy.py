"""Tenants: a user may belong to one tenant, a room may belong to one (the create event's
`io.erpchat.tenant`, fixed for the room's life). A membership that would put a user into
a room of another tenant is refused; users without a tenant and rooms without one form
their own group, so the wall holds both ways. Directory, profile and alias look-ups are
scoped the same way. Enforced here, for every client alike."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from homeserver.errors import MatrixError, forbidden
from homeserver.room_heads import RoomHead
from storage import tenancy as tenancy_store

if TYPE_CHECKING:
    from homeserver.server import HomeServer

TENANT_KEY = "io.erpchat.tenant"
TENANT_ID_RE = re.compile(r"^[A-Za-z0-9._=-]{1,64}$")
ENTERING = ("join", "invite", "knock")


def room_tenant(head: RoomHead) -> str | None:
    if head.remote_tenant is not None:  # another server's room: its tenant key means nothing here
        return head.remote_tenant[0]
    create = head.state.get(("m.room.create", ""))
    value = create.content.get(TENANT_KEY) if create is not None else None
    return value if isinstance(value, str) else None


class Tenancy:
    def __init__(self, hs: "HomeServer") -> None:
        self.hs = hs
        self._users: dict[str, str | None] = {}

    async def tenant_of(self, user_id: str) -> str | None:
        if user_id not in self._users:
            if not self.hs.accounts.is_mine(user_id):
                return None  # remote users belong to no tenant of ours
            self._users[user_id] = await self.hs.db.run(tenancy_store.user_tenant, user_id)
        return self._users[user_id]

    async def set_tenant(self, user_id: str, tenant_id: str | None) -> None:
        if tenant_id is not None and not TENANT_ID_RE.match(tenant_id):
            raise MatrixError(400, "M_INVALID_PARAM", "tenant_id may use A-Z a-z 0-9 . _ = - (1-64 chars)")
        if not await self.hs.db.run(tenancy_store.set_user_tenant, user_id, tenant_id):
            raise MatrixError(404, "M_NOT_FOUND", "no such user")
        self._users[user_id] = tenant_id

    async def same_tenant(self, a: str, b: str) -> bool:
        return await self.tenant_of(a) == await self.tenant_of(b)

    def check_membership(self, head: RoomHead, target: str, membership: str | None) -> None:
        """Refuse a join, invite or knock across the tenant wall. Synchronous, for the
        event builder: the target's tenant must have been looked up (`tenant_of`) first."""
        if membership not in ENTERING:
            return
        if not self.hs.accounts.is_mine(target):  # another server's user (federation)
            federation = self.hs.federation
            if federation is None or not federation.exposure.room_open(head):
                raise forbidden("this room's organization does not take part in federation")
            return
        if self.hs.accounts.is_mine(target) and target not in self._users:
            raise forbidden("the user's organization is not known yet; try again")
        if self._users.get(target) != room_tenant(head):
            raise forbidden("this room belongs to another organization")
