"""The device-list stream: a user's devices or keys changed, so users who share a room
with them should re-query their keys (sync's device_lists.changed, keys/changes).

Written by the stream owner alone (`worker.streams`, docs/scaling.md): a change made on
another process (the admin API answers on client processes) is handed to the owner over
its internal listener (`record_change`, `serve_device_list_changed`)."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

import orjson

from homeserver.errors import MatrixError
from homeserver.ids import is_valid_user_id
from storage import device_lists as store
from sync.change_log import ChangeLog
from sync.stream_ids import StreamIdGen

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)
CHANGED_PATH = "/_homeserver/internal/v1/device_list_changed"
TELL_TIMEOUT_S = 10.0  # a stream owner that does not answer fails the change, never hangs it


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

    async def record_change(self, user_id: str) -> None:
        """Returns once the change is recorded where /sync reads it; raises (503) when the
        stream owner cannot be told: the change must not be lost silently."""
        if not self.hs.config.worker.owns_streams:
            await self._tell_owner(user_id)
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

    async def _tell_owner(self, user_id: str) -> None:
        owner = self.hs.config.worker.streams
        try:
            status, answer = await self.hs.internal.post(owner, CHANGED_PATH, {"user_id": user_id},
                                                         timeout_s=TELL_TIMEOUT_S)
        except Exception as e:
            status, answer = None, str(e) or type(e).__name__
        if status != 200:
            logger.warning("telling %s that the devices of %s changed failed: %s %s", owner, user_id, status, answer)
            raise MatrixError(503, "M_UNKNOWN", "the device change is saved but could not be announced; retry")

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


async def serve_device_list_changed(hs: "HomeServer", body: bytes) -> tuple[int, dict[str, Any]]:
    """The stream owner's side of `record_change` on another process (an internal listener
    only)."""
    if not hs.config.worker.owns_streams:  # ids come from the owner's memory alone
        return 404, {"errcode": "M_UNRECOGNIZED", "error": "not the stream owner"}
    try:
        user_id = orjson.loads(body)["user_id"]
        if not isinstance(user_id, str) or not is_valid_user_id(user_id):
            raise TypeError("user_id must be a user id")
    except (ValueError, KeyError, TypeError) as e:
        return 400, {"errcode": "M_BAD_JSON", "error": str(e)}
    await hs.sync.device_lists.record_change(user_id)
    return 200, {}
