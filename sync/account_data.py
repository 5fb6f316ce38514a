"""Account data writes with a stream position, so /sync can send what changed."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Callable

from storage import account_data as store
from sync.stream_ids import StreamIdGen

if TYPE_CHECKING:
    from homeserver.server import HomeServer


class AccountData:
    def __init__(self, hs: "HomeServer", on_change: Callable[[str], None]) -> None:
        self.hs = hs
        self._on_change = on_change
        self.stream: StreamIdGen = None  # type: ignore[assignment]
        self._user_stream: dict[str, int] = {}

    async def start(self) -> None:
        self.stream = StreamIdGen(await self.hs.db.run(store.max_stream))

    async def put(self, user_id: str, room_id: str, data_type: str, content: dict,
                  update: Callable[[dict | None], dict] | None = None) -> None:
        """Store `content` (or, with `update`, the result of applying it to the old
        value, read and written in one transaction)."""
        stream_id = self.stream.allocate()

        def txn(cur):
            value = content
            if update is not None:
                cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (user_id + room_id + data_type,))
                value = update(store.get_account_data(cur, user_id, room_id, data_type))
            store.put_account_data(cur, user_id, room_id, data_type, value, stream_id)

        try:
            await self.hs.db.run(txn)
        finally:
            self.stream.finish(stream_id)
        self._user_stream[user_id] = max(self._user_stream.get(user_id, 0), stream_id)
        self._on_change(user_id)

    async def user_stream(self, user_id: str) -> int:
        if user_id not in self._user_stream:
            loaded = await self.hs.db.run(store.max_stream_for_user, user_id)
            # A write that finished while we read has set a newer position: keep it.
            self._user_stream[user_id] = max(self._user_stream.get(user_id, 0), loaded)
        return self._user_stream[user_id]

    async def changed_since(self, user_id: str, since: int) -> tuple[list[dict], dict[str, list[dict]]]:
        rows = await self.hs.db.run(store.changed_since, user_id, since, self.stream.current)
        global_events, room_events = [], {}
        for room_id, data_type, content in rows:
            ev = {"type": data_type, "content": json.loads(content)}
            if room_id:
                room_events.setdefault(room_id, []).append(ev)
            else:
                global_events.append(ev)
        return global_events, room_events
