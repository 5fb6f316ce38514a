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
        self._log: list[tuple[int, str]] = []  # (stream, user) recorded by this process
        self.listeners: list[Callable[[str], None]] = []  # told each changed user (federation)
        self._start = 0

    async def start(self) -> None:
        self._start = await self.hs.db.run(store.max_stream)
        self.stream = StreamIdGen(self._start)

    async def record_change(self, user_id: str) -> None:
        stream_id = self.stream.allocate()
        try:
            await self.hs.db.run(store.record_change, stream_id, user_id)
        finally:
            self.stream.finish(stream_id)
        self._log.append((stream_id, user_id))
        if len(self._log) > 10_000:  # older positions fall back to the database
            self._start = self._log[5_000][0]
            del self._log[:5_000]
        self._on_change(user_id)
        for listener in self.listeners:
            listener(user_id)

    def changed_in_memory(self, since: int) -> set[str]:
        """Users changed after `since` as far as this process knows (tokens from before
        it started are answered by `changed_since`)."""
        upto = self.stream.current  # ids above it may still be committing
        return {u for s, u in self._log if since < s <= upto}

    async def changed_since(self, since: int, upto: int | None = None) -> set[str]:
        upto = self.stream.current if upto is None else upto
        if since >= upto:
            return set()
        if since >= self._start:
            return {u for s, u in self._log if since < s <= upto}
        return set(await self.hs.db.run(store.changed_since, since, upto))

    async def changes_for(self, user_id: str, since_events: int, upto_events: int,
                          since: int, upto: int) -> tuple[list[str], list[str]]:
        """/keys/changes: (changed, left) between two positions. `changed` holds the users
        sharing a room with `user_id` whose devices changed, and those who came to share
        one (their keys are new to this user); `left` those who no longer share any."""
        changed = await self.changed_since(since, upto)

        def txn(cur):
            came, left = (set(), set()) if since_events >= upto_events else \
                store.sharing_changes(cur, user_id, since_events, upto_events)
            others = sorted(changed - came - {user_id})
            return came | set(store.users_sharing_room_with(cur, user_id, others)), left

        sharing_changed, left = await self.hs.db.run(txn)
        if user_id in changed:
            sharing_changed.add(user_id)
        return sorted(sharing_changed), sorted(left - sharing_changed)
