"""Whether a room is published in the room directory: stored in `rooms.is_public` and held
in the room's head (`RoomHead.is_public`, for /initialSync and upgrades). Every change goes
through `set_published`, which tells the other processes (several processes,
docs/scaling.md): they read the flag again into the head they hold."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from storage import directory as directory_store

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)
INVALIDATION = "room_public"


async def set_published(hs: "HomeServer", room_id: str, public: bool) -> None:
    await hs.db.run(directory_store.set_room_public, room_id, public)
    head = hs.room_heads.peek(room_id)
    if head is not None:
        head.is_public = public
    await hs.invalidate_elsewhere(INVALIDATION, room_id)


class PublishedReloader:
    """The other side: another process changed a room's flag; the head held here reads it
    again. Reads may finish out of order, so only the latest read for a room counts."""

    def __init__(self, hs: "HomeServer") -> None:
        self.hs = hs
        self._reads: dict[str, int] = {}  # room -> number of the latest read started

    def changed(self, room_id: str) -> None:
        if self.hs.room_heads.peek(room_id) is None:
            # Read from the table when next needed; a head being loaded now may have
            # read the old flag, so it is not kept.
            self.hs.room_heads.invalidate(room_id)
            return
        number = self._reads.get(room_id, 0) + 1
        self._reads[room_id] = number

        def apply(public: bool | None) -> None:
            if self._reads.get(room_id) != number:
                return  # a later change's read decides
            del self._reads[room_id]
            head = self.hs.room_heads.peek(room_id)
            if head is not None and public is not None:
                head.is_public = public

        def failed(f) -> None:
            if self._reads.get(room_id) == number:
                del self._reads[room_id]
            logger.warning("reading whether %s is published failed: %s", room_id, f.getErrorMessage())

        self.hs.db.run(directory_store.get_room_public, room_id).addCallbacks(apply, failed)
