"""Guest accounts in rooms (the spec's "Guest access" module): a guest may join a room only
while its `m.room.guest_access` is `can_join`, and when a room stops admitting guests its
joined guests leave. Guests have no tenant, so only rooms without one can admit them;
tenant rooms never do (a guest given a tenant by an admin is still refused)."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from twisted.internet import defer

from homeserver.errors import MatrixError
from homeserver.event import Event
from homeserver.room_heads import RoomHead
from homeserver.tenancy import room_tenant
from storage import accounts as accounts_store

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)


def guests_may_join(head: RoomHead) -> bool:
    ev = head.state.get(("m.room.guest_access", ""))
    return ev is not None and ev.content.get("guest_access") == "can_join" and room_tenant(head) is None


class GuestRooms:
    """Persist listener: guests leave rooms that no longer admit them."""

    def __init__(self, hs: "HomeServer") -> None:
        self.hs = hs

    def on_events(self, events: list[Event]) -> None:
        for ev in events:
            # Several processes replay the event: the room's writer alone sends the leaves.
            if ev.type == "m.room.guest_access" and ev.state_key == "" \
                    and ev.content.get("guest_access") != "can_join" and self.hs.builds_room(ev.room_id):
                defer.ensureDeferred(self._remove_guests(ev.room_id)).addErrback(
                    lambda f, room=ev.room_id: logger.error("removing guests from %s: %s", room, f.getTraceback()))

    async def _remove_guests(self, room_id: str) -> None:
        head = await self.hs.room_heads.get(room_id)
        if head is None or guests_may_join(head):
            return  # changed back meanwhile
        for user_id in await self.hs.db.run(accounts_store.guests_among, head.joined_members()):
            try:
                await self.hs.membership.set_membership(user_id, room_id, user_id, "leave")
            except MatrixError as e:  # e.g. left by itself meanwhile
                logger.info("guest %s could not leave %s: %s", user_id, room_id, e)
