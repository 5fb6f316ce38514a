"""Tenants: a user may belong to one tenant, a room may belong to one (the create event's
`io.erpchat.tenant`, fixed for the room's life). Users without a tenant and rooms without
one form their own group, so the wall holds both ways.

The contract: to a user of another group, a room, event, alias, user or device answers
exactly as if it did not exist. The look-ups here are the ones every endpoint uses for
that (`head_for`, `visible_users`); the refusals share one wording per situation, so an
answer never tells another tenant's thing from a missing one. Enforced here, for every
client alike."""
from __future__ import annotations

import re
from typing import TYPE_CHECKING, Iterable

from homeserver.errors import MatrixError, forbidden
from homeserver.room_heads import RoomHead
from storage import tenancy as tenancy_store

if TYPE_CHECKING:
    from homeserver.server import HomeServer

TENANT_KEY = "io.erpchat.tenant"
TENANT_ID_RE = re.compile(r"^[A-Za-z0-9._=-]{1,64}$")
ENTERING = ("join", "invite", "knock")

# The one answer for each refused entry, whether the room or user is missing or walled off.
JOIN_REFUSED = "you may not join this room"
KNOCK_REFUSED = "you may not knock on this room"
INVITE_ROOM_REFUSED = "you may not invite users to this room"
INVITEE_REFUSED = "this user may not be invited to this room"


def room_tenant(head: RoomHead) -> str | None:
    if head.remote_tenant is not None:  # another server's room: its tenant key means nothing here
        return head.remote_tenant[0]
    create = head.state.get(("m.room.create", ""))
    value = create.content.get(TENANT_KEY) if create is not None else None
    return value if isinstance(value, str) else None


class Tenancy:
    def __init__(self, hs: "HomeServer") -> None:
        self.hs = hs
        # Tenants of local users that exist; missing users are asked again next time (an
        # application service may create them meanwhile).
        self._users: dict[str, str | None] = {}

    async def tenant_of(self, user_id: str) -> str | None:
        """The user's tenant; None for users without one, remote and missing users."""
        if user_id not in self._users:
            if not self.hs.accounts.is_mine(user_id):
                return None  # remote users belong to no tenant of ours
            self._users.update(await self.hs.db.run(tenancy_store.user_tenants, [user_id]))
        return self._users.get(user_id)

    async def set_tenant(self, user_id: str, tenant_id: str | None) -> None:
        if tenant_id is not None and not TENANT_ID_RE.match(tenant_id):
            raise MatrixError(400, "M_INVALID_PARAM", "tenant_id may use A-Z a-z 0-9 . _ = - (1-64 chars)")
        if not await self.hs.db.run(tenancy_store.set_user_tenant, user_id, tenant_id):
            raise MatrixError(404, "M_NOT_FOUND", "no such user")
        self._users[user_id] = tenant_id
        await self.hs.invalidate_elsewhere("tenants", user_id)

    def forget_user(self, user_id: str) -> None:
        """Another process changed the user's tenant."""
        self._users.pop(user_id, None)

    async def same_tenant(self, a: str, b: str) -> bool:
        return await self.tenant_of(a) == await self.tenant_of(b)

    async def users_of_tenant(self, tenant: str | None, user_ids: Iterable[str]) -> set[str]:
        """Those of `user_ids` that are existing local users of `tenant` (one query for the
        ones not seen before, none once they are known)."""
        local = {u for u in user_ids if self.hs.accounts.is_mine(u)}
        unknown = [u for u in local if u not in self._users]
        if unknown:
            self._users.update(await self.hs.db.run(tenancy_store.user_tenants, unknown))
        return {u for u in local if u in self._users and self._users[u] == tenant}

    async def visible_users(self, viewer: str, user_ids: Iterable[str]) -> set[str]:
        """Those of `user_ids` that are existing local users of the viewer's tenant, and
        other servers' users when the viewer's tenant takes part in federation."""
        user_ids = list(user_ids)
        tenant = await self.tenant_of(viewer)
        visible = await self.users_of_tenant(tenant, user_ids)
        federation = self.hs.federation
        if federation is not None and federation.exposure.tenant_open(tenant):
            visible |= {u for u in user_ids if not self.hs.accounts.is_mine(u)}
        return visible

    async def head_for(self, viewer: str | None, room_id: str) -> RoomHead | None:
        """The room as `viewer` may know of it: None when it does not exist or belongs to
        another tenant. Anonymous viewers (None) are in the tenant-less group."""
        head = await self.hs.room_heads.get(room_id)
        if head is None:
            return None
        mine = await self.tenant_of(viewer) if viewer is not None else None
        return head if room_tenant(head) == mine else None

    def check_membership(self, head: RoomHead, target: str, membership: str | None) -> None:
        """Refuse a join, invite or knock across the tenant wall, and of a local user who
        does not exist, in the same words. Synchronous, for the event builder: the target's
        tenant must have been looked up (`tenant_of`) first."""
        if membership not in ENTERING:
            return
        federation = self.hs.federation
        if federation is not None and not self.hs.accounts.is_mine(target):
            # Another server's user: only into rooms open to federation (federated_tenants).
            if not federation.exposure.room_open(head):
                raise forbidden(INVITEE_REFUSED if membership == "invite" else JOIN_REFUSED)
            return
        exists = not self.hs.accounts.is_mine(target) or target in self._users
        if not exists or self._users.get(target) != room_tenant(head):
            raise forbidden(INVITEE_REFUSED if membership == "invite" else JOIN_REFUSED)
