"""The audit trail: who did what, when, from where. Entries carry the tenant of what was
acted on (a user's or a room's), so a tenant admin reads their organization's entries.
Never a password or a token: callers pass only ids and plain facts in `details`."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from storage import admin_rooms as admin_rooms_store
from storage import audit as audit_store
from storage.audit import AuditEntry

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)


@dataclass
class Origin:
    """Where a request came from."""
    actor: str | None
    ip: str | None = None
    user_agent: str | None = None


class Audit:
    def __init__(self, hs: "HomeServer") -> None:
        self.hs = hs

    async def record(self, action: str, origin: Origin, *, target_user: str | None = None,
                     target_room: str | None = None, tenant_id: Any = ..., **details: Any) -> None:
        if tenant_id is ...:
            tenant_id = await self._tenant_of(target_user, target_room)
        entry = AuditEntry(action, int(time.time() * 1000), origin.actor, target_user, target_room,
                           tenant_id, origin.ip, origin.user_agent, details)
        await self.hs.db.run(audit_store.add, entry)
        logger.info("audit: %s by %s (user %s, room %s)", action, origin.actor or "-", target_user or "-",
                    target_room or "-")

    async def _tenant_of(self, user_id: str | None, room_id: str | None) -> str | None:
        if room_id is not None:
            _, tenant = await self.hs.db.run(admin_rooms_store.room_tenant, room_id)
            return tenant
        if user_id is not None and self.hs.accounts.is_mine(user_id):
            return await self.hs.tenancy.tenant_of(user_id)
        return None
