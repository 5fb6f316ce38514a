"""What this server shows to another server: rooms and users only where that server
has a member, and nothing of a tenant that is not opened to federation
(`federation.federated_tenants`). One place, so every federation endpoint applies the
same rules (a tenant's room, user or alias answers as if it did not exist)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from homeserver.ids import split_id
from homeserver.room_heads import RoomHead
from homeserver.tenancy import room_tenant
from storage import state as state_store

if TYPE_CHECKING:
    from homeserver.server import HomeServer


def server_of(user_id: str) -> str:
    parts = split_id(user_id, "@")
    return parts[1] if parts else ""


def servers_in_room(head: RoomHead, memberships: tuple[str, ...] = ("join",)) -> set[str]:
    return {server_of(u) for u, m in head.members.items() if m in memberships}


def server_in_room(head: RoomHead, server_name: str) -> bool:
    return any(m == "join" and server_of(u) == server_name for u, m in head.members.items())


class Exposure:
    def __init__(self, hs: "HomeServer") -> None:
        self.hs = hs
        self._open = set(hs.config.federation.federated_tenants)

    def tenant_open(self, tenant: str | None) -> bool:
        return tenant is None or tenant in self._open

    def room_open(self, head: RoomHead) -> bool:
        """Whether remote users may enter the room at all."""
        return self.tenant_open(room_tenant(head))

    async def user_open(self, user_id: str, origin: str) -> bool:
        """Whether another server may learn about this local user (profile, devices,
        keys): users without a tenant always; a federated tenant's users only by
        servers that share a room with them."""
        tenant = await self.hs.tenancy.tenant_of(user_id)
        if tenant is None:
            return True
        if tenant not in self._open:
            return False
        for room_id in await self.hs.db.run(state_store.rooms_for_user, user_id):
            head = await self.hs.room_heads.get(room_id)
            if head is not None and server_in_room(head, origin):
                return True
        return False

    async def room_for(self, room_id: str, origin: str, *, member_required: bool = True) -> RoomHead | None:
        """The room as `origin` may know of it: None when unknown here, walled off, or
        (when required) when `origin` has no joined member in it."""
        head = await self.hs.room_heads.get(room_id)
        if head is None or not self.room_open(head):
            return None
        if member_required and not server_in_room(head, origin):
            return None
        return head

    def servers_for(self, head: RoomHead) -> list[str]:
        """Servers to try for joining the room: this one first, then those with members."""
        others = sorted(servers_in_room(head) - {self.hs.server_name})
        return [self.hs.server_name, *others]

    def previewable(self, head: RoomHead, origin: str) -> bool:
        """A room summary may go to `origin` (hierarchy): it has a member there, or the
        room is public or world-readable."""
        if server_in_room(head, origin):
            return True
        rules = head.state.get(("m.room.join_rules", ""))
        vis = head.state.get(("m.room.history_visibility", ""))
        return (rules is not None and rules.content.get("join_rule") == "public") or \
            (vis is not None and vis.content.get("history_visibility") == "world_readable")

    async def may_see_event(self, origin: str, head: RoomHead, event_id: str) -> bool:
        """History visibility for servers: `origin` may see the event if one of its users
        was joined at it (invited too, for `invited` rooms), if the room is
        world-readable then, or (`shared`) if it has a member now."""
        fed = self.hs.federation
        status = (await self.hs.federation.inbound.statuses([event_id])).get(event_id)
        if status is None or status[0] == "rejected":
            return False
        state, _ = await fed.inbound.state.group(status[1])
        vis_id = state.get(("m.room.history_visibility", ""))
        visibility = "shared"
        if vis_id is not None:
            vis = (await fed.inbound.state.events([vis_id], head.room_version)).get(vis_id)
            if vis is not None:
                visibility = vis.content.get("history_visibility", "shared")
        if visibility == "world_readable":
            return True
        memberships = ("join", "invite") if visibility == "invited" else ("join",)
        members = [eid for (etype, user), eid in state.items()
                   if etype == "m.room.member" and server_of(user) == origin]
        if members:
            for ev in (await fed.inbound.state.events(members, head.room_version)).values():
                if ev.membership in memberships:
                    return True
        return visibility == "shared" and server_in_room(head, origin)
