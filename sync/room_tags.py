"""A user's DM rooms (`m.direct`) and room tags (`m.tag`), as sliding sync's filters and
`is_dm` read them: one statement when the user's account data changed, else memory."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from homeserver.lru import LRU
from storage import sliding_sync as store

if TYPE_CHECKING:
    from homeserver.server import HomeServer
    from sync.engine import SyncEngine


@dataclass(frozen=True)
class RoomTagsOfUser:
    direct: frozenset[str]
    tags: dict[str, frozenset[str]]


def parse_direct(content: object) -> frozenset[str]:
    """Room ids of an m.direct content ({user: [room, ...]}); anything malformed is skipped."""
    if not isinstance(content, dict):
        return frozenset()
    return frozenset(r for rooms in content.values() if isinstance(rooms, list)
                     for r in rooms if isinstance(r, str))


def parse_tags(content: object) -> frozenset[str]:
    tags = content.get("tags") if isinstance(content, dict) else None
    return frozenset(t for t in tags if isinstance(t, str)) if isinstance(tags, dict) else frozenset()


class RoomTags:
    def __init__(self, hs: "HomeServer", engine: "SyncEngine") -> None:
        self.hs = hs
        self.engine = engine
        self._users: LRU[str, tuple[int, RoomTagsOfUser]] = LRU(20_000)

    async def get(self, user_id: str) -> RoomTagsOfUser:
        stream = await self.engine.account_data.user_stream(user_id)
        cached = self._users.get(user_id)
        if cached is not None and cached[0] == stream:
            return cached[1]
        tags, direct = await self.hs.db.run(store.tags_and_direct, user_id)
        value = RoomTagsOfUser(parse_direct(direct), {r: parse_tags(c) for r, c in tags.items()})
        if await self.engine.account_data.user_stream(user_id) == stream:  # no write meanwhile
            self._users.put(user_id, (stream, value))
        return value
