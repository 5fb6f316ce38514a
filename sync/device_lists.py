"""The device-list stream: a user's devices or keys changed, so users who share a room
with them should re-query their keys (sync's device_lists.changed, keys/changes)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from storage import device_lists as store
from sync.stream_ids import StreamIdGen

if TYPE_CHECKING:
    from homeserver.server import HomeServer


class DeviceLists:
    def __init__(self, hs: "HomeServer", on_change: Callable[[str], None]) -> None:
        self.hs = hs
        self._on_change = on_change  # told the user id; wakes those who share a room
        self.stream: StreamIdGen = None  # type: ignore[assignment]
        self._user_stream: dict[str, int] = {}

    async def start(self) -> None:
        self.stream = StreamIdGen(await self.hs.db.run(store.max_stream))

    async def record_change(self, user_id: str) -> None:
        stream_id = self.stream.allocate()
        try:
            await self.hs.db.run(store.record_change, stream_id, user_id)
        finally:
            self.stream.finish(stream_id)
        self._user_stream[user_id] = stream_id
        self._on_change(user_id)

    async def changed_since(self, since: int, upto: int | None = None) -> set[str]:
        upto = self.stream.current if upto is None else upto
        if since >= upto:
            return set()
        return set(await self.hs.db.run(store.changed_since, since, upto))
