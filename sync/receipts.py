"""Read receipts (m.read, m.read.private, threaded) and their stream."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

from storage import receipts as receipts_store
from sync.change_log import ChangeLog
from sync.stream_ids import StreamIdGen

if TYPE_CHECKING:
    from homeserver.server import HomeServer

RECEIPT_TYPES = ("m.read", "m.read.private")


class Receipts:
    def __init__(self, hs: "HomeServer", on_change: Callable[[str, dict | None], None]) -> None:
        self.hs = hs
        self._on_change = on_change
        self.stream: StreamIdGen = None  # type: ignore[assignment]
        self._room_stream: dict[str, int] = {}
        self.log: ChangeLog = None  # type: ignore[assignment]  # (stream, room), from start

    async def start(self) -> None:
        self.stream = StreamIdGen(await self.hs.db.run(receipts_store.max_stream))
        self.log = ChangeLog(self.stream.current)

    async def put(self, room_id: str, receipt_type: str, user_id: str, event_id: str,
                  thread_id: str | None) -> None:
        stream_id = self.stream.allocate()
        try:
            await self.hs.db.run(receipts_store.put_receipt, room_id, receipt_type, user_id,
                                 thread_id or "", event_id, int(time.time() * 1000), stream_id)
        finally:
            self.stream.finish(stream_id)
        await self._reset_counts(room_id, user_id, event_id, thread_id, stream_id)
        self._room_stream[room_id] = max(self._room_stream.get(room_id, 0), stream_id)
        self.log.record(stream_id, room_id)
        receipt: dict = {"ts": int(time.time() * 1000)}
        if thread_id:
            receipt["thread_id"] = thread_id
        self._on_change(room_id, {"type": "m.receipt",
                                  "content": {event_id: {receipt_type: {user_id: receipt}}}})

    async def _reset_counts(self, room_id: str, user_id: str, event_id: str, thread_id: str | None,
                            stream_id: int) -> None:
        """Notifications up to the receipt's event are read: the user's unread counts
        drop before anyone is woken, so the /sync carrying the receipt has them."""
        event = await self.hs.event_cache.get(event_id)
        if event is not None and event.stream_ordering:
            await self.hs.push.counts.on_receipt(user_id, room_id, thread_id, event.stream_ordering, stream_id)
            self.hs.push.counts.announce_receipt(user_id, room_id, thread_id, event.stream_ordering, stream_id)

    def restart_at(self, position: int) -> None:
        """A sync process following the stream owner starts at its announced position."""
        self.stream.restart_at(position)
        self.log = ChangeLog(position)

    async def prepare_follow(self, rows: list[tuple[int, str, str, str, str, str]]) -> None:
        """Several sync processes (sync/stream_followers.py): the unread counts the owner's
        receipts lower, applied before the position moves and anyone is woken."""
        for stream_id, room_id, receipt_type, user_id, thread_id, event_id in rows:
            if receipt_type in RECEIPT_TYPES:
                event = await self.hs.event_cache.get(event_id)
                if event is not None and event.stream_ordering:
                    await self.hs.push.counts.on_receipt(user_id, room_id, thread_id or None,
                                                         event.stream_ordering, stream_id)

    def follow(self, rows: list[tuple[int, str, str, str, str, str]]) -> None:
        """Several sync processes: receipts the stream owner stored."""
        for stream_id, room_id, *_ in rows:
            self._room_stream[room_id] = max(self._room_stream.get(room_id, 0), stream_id)
            self.log.record(stream_id, room_id)
            self._on_change(room_id, None)

    def known_room_stream(self, room_id: str) -> int | None:
        return self._room_stream.get(room_id)

    def remember_room_streams(self, streams: dict[str, int]) -> None:
        for room_id, s in streams.items():
            self._room_stream.setdefault(room_id, s)

    async def receipt_events(self, room_ids: list[str], since: int, upto: int,
                             viewer: str) -> dict[str, dict]:
        """room_id -> the m.receipt ephemeral event for receipts in (since, upto]."""
        rows = await self.hs.db.run(receipts_store.receipts_since, room_ids, since, upto)
        out: dict[str, dict] = {}
        for room_id, rtype, user_id, thread_id, event_id, ts in rows:
            if rtype == "m.read.private" and user_id != viewer:
                continue  # private receipts are for their owner only
            receipt: dict = {"ts": ts}
            if thread_id:
                receipt["thread_id"] = thread_id
            content = out.setdefault(room_id, {"type": "m.receipt", "content": {}})["content"]
            content.setdefault(event_id, {}).setdefault(rtype, {})[user_id] = receipt
        return out
