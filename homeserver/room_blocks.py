"""Blocked rooms: nobody may join, knock on or be invited to them (the admin API's block,
and room deletion with `block`). Held in memory, written through."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from twisted.internet import defer

from homeserver.errors import forbidden
from storage import admin_rooms as admin_rooms_store

if TYPE_CHECKING:
    from homeserver.server import HomeServer


class RoomBlocks:
    def __init__(self, hs: "HomeServer") -> None:
        self.hs = hs
        self._blocked: dict[str, str] = {}  # room_id -> the admin who blocked it

    async def start(self) -> None:
        self._blocked = await self.hs.db.run(admin_rooms_store.all_blocked)

    def blocked_by(self, room_id: str) -> str | None:
        return self._blocked.get(room_id)

    def check(self, room_id: str) -> None:
        if room_id in self._blocked:
            raise forbidden("This room has been blocked on this server")

    async def block(self, room_id: str, by: str, tenant_id: str | None) -> None:
        await self.hs.db.run(admin_rooms_store.block_room, room_id, by, tenant_id, int(time.time() * 1000))
        self._blocked.setdefault(room_id, by)
        await self._tell_others(room_id)

    async def unblock(self, room_id: str) -> None:
        await self.hs.db.run(admin_rooms_store.unblock_room, room_id)
        self._blocked.pop(room_id, None)
        await self._tell_others(room_id)

    async def _tell_others(self, room_id: str) -> None:
        await self.hs.invalidate_elsewhere("room_blocks", room_id)  # several processes: the writers check blocks

    def reload(self, _room_id: str = "") -> None:
        """Another process blocked or unblocked a room."""
        defer.ensureDeferred(self.start())
