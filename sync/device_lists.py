"""The device-list stream: a user's devices or keys changed, so users who share a room
with them should re-query their keys (sync's device_lists.changed, keys/changes).

Written by the stream owner alone (`worker.streams`, docs/scaling.md). A change made on
another process (the admin API answers on client processes) is stored in
`device_list_outbox` and announced in the same transaction; the owner records what the
outbox holds when it hears of it, and after every (re)connect, so a change survives the
owner being away."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable

from homeserver.async_utils import Rerun
from storage import device_lists as store
from sync.change_log import ChangeLog
from sync.stream_ids import StreamIdGen

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)
OUTBOX_PAGE = 500


class DeviceLists:
    def __init__(self, hs: "HomeServer", on_change: Callable[[str], None]) -> None:
        self.hs = hs
        self._on_change = on_change  # told the user id; wakes those who share a room
        self.stream: StreamIdGen = None  # type: ignore[assignment]
        # (stream, user) recorded by this process; older positions fall back to the database
        self._log: ChangeLog = None  # type: ignore[assignment]
        self.listeners: list[Callable[[str], None]] = []  # told each changed user (federation)

    async def start(self) -> None:
        start = await self.hs.db.run(store.max_stream)
        self.stream = StreamIdGen(start)
        self._log = ChangeLog(start, keep=10_000)
        if self.hs.replication is not None and self.hs.config.worker.owns_streams:
            outbox = Rerun(self._drain_outbox)
            self.hs.replication.on_position(store.OUTBOX_STREAM, lambda _position: outbox.request())

    async def record_change(self, user_id: str) -> None:
        """Returns once the change is stored: recorded where /sync reads it on the stream
        owner, queued for the owner elsewhere."""
        if not self.hs.config.worker.owns_streams:
            await self.hs.db.run(store.queue_change, user_id, self.hs.config.worker.instance_name)
            return
        stream_id = self.stream.allocate()
        try:
            await self.hs.db.run(store.record_change, stream_id, user_id)
        finally:
            self.stream.finish(stream_id)
        self._log.record(stream_id, user_id)
        self._on_change(user_id)
        for listener in self.listeners:
            listener(user_id)

    def restart_at(self, position: int) -> None:
        """A sync process following the stream owner starts at its announced position."""
        self.stream.restart_at(position)
        self._log = ChangeLog(position, keep=10_000)

    def follow(self, rows: list[tuple[int, str]]) -> None:
        """Several sync processes: changes the stream owner recorded."""
        for stream_id, user_id in rows:
            self._log.record(stream_id, user_id)
            self._on_change(user_id)

    async def _drain_outbox(self) -> None:
        """Record the changes other processes queued, then drop them (a crash in between
        records one twice, which only makes clients query keys again)."""
        try:
            while True:
                rows = await self.hs.db.run(store.queued_changes, OUTBOX_PAGE)
                for user_id in dict.fromkeys(u for _, u in rows):
                    await self.record_change(user_id)
                if rows:
                    await self.hs.db.run(store.forget_queued, [i for i, _ in rows])
                if len(rows) < OUTBOX_PAGE:
                    return
        except Exception:  # the next announcement or reconnect tries again
            logger.warning("recording queued device-list changes failed", exc_info=True)

    def changed_in_memory(self, since: int) -> set[str]:
        """Users changed after `since` as far as this process knows (tokens from before
        it started are answered by `changed_since`)."""
        upto = self.stream.current  # ids above it may still be committing
        return self._log.changed_after(max(since, self._log.floor), upto) or set()

    async def changed_since(self, since: int, upto: int | None = None) -> set[str]:
        upto = self.stream.current if upto is None else upto
        if since >= upto:
            return set()
        changed = self._log.changed_after(since, upto)
        if changed is not None:
            return changed
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
