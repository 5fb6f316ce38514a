"""Account data writes with a stream position, so /sync can send what changed; and each
user's m.ignored_user_list, kept in memory with its recent changes (see `ignored_at`)."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Callable

from storage import account_data as store
from sync.stream_ids import StreamIdGen

if TYPE_CHECKING:
    from homeserver.server import HomeServer

IGNORED_USER_LIST = "m.ignored_user_list"
# Several processes: the stream owner writes account data; the others, which filter
# /messages and /context by the list, read a changed list again (keyed by the user).
IGNORED_INVALIDATION = "ignored_users"
IGNORE_HISTORY = 16  # changes of one user's list remembered, for "missed while ignored"
# (events position from which a list applies, the ignored users), oldest first
IgnoreHistory = tuple[tuple[int, frozenset[str]], ...]
_NOBODY: IgnoreHistory = ((0, frozenset()),)


def parse_ignored(content: dict | None) -> frozenset[str]:
    """The user ids of an m.ignored_user_list content; anything malformed ignores nobody."""
    users = content.get("ignored_users") if isinstance(content, dict) else None
    return frozenset(u for u in users if isinstance(u, str)) if isinstance(users, dict) else frozenset()


class AccountData:
    def __init__(self, hs: "HomeServer", on_change: Callable[[str], None]) -> None:
        self.hs = hs
        self._on_change = on_change
        self.stream: StreamIdGen = None  # type: ignore[assignment]
        self._user_stream: dict[str, int] = {}
        self._ignored: dict[str, IgnoreHistory] = {}
        self._ignores_heard = 0  # notices of lists changed elsewhere: a read begun before one is stale
        if hs.replication is not None:
            hs.replication.on_invalidate(IGNORED_INVALIDATION, self._ignore_changed_elsewhere)

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
            return value

        try:
            value = await self.hs.db.run(txn)
        finally:
            self.stream.finish(stream_id)
        self._user_stream[user_id] = max(self._user_stream.get(user_id, 0), stream_id)
        if data_type == IGNORED_USER_LIST and not room_id:
            self._ignore_changed(user_id, parse_ignored(value))
            await self.hs.invalidate_elsewhere(IGNORED_INVALIDATION, user_id)
        self._on_change(user_id)

    def restart_at(self, position: int) -> None:
        """A sync process following the stream owner starts at its announced position."""
        self.stream.restart_at(position)

    def follow(self, rows: list[tuple[int, str]]) -> None:
        """Several sync processes: account data the stream owner wrote (the ignored-users
        lists come by their own invalidation)."""
        for stream_id, user_id in rows:
            self._user_stream[user_id] = max(self._user_stream.get(user_id, 0), stream_id)
            self._on_change(user_id)

    def _ignore_changed(self, user_id: str, users: frozenset[str]) -> None:
        # Events persisted from now on have higher stream positions than this one.
        entry = (self.hs.persister.max_stream_ordering, users)
        history = self._ignored.get(user_id)
        self._ignored[user_id] = (*history, entry)[-IGNORE_HISTORY:] if history else ((0, frozenset()), entry)

    def _ignore_changed_elsewhere(self, user_id: str) -> None:
        self._ignores_heard += 1
        self._ignored.pop(user_id, None)

    async def ignored_users(self, user_id: str) -> frozenset[str]:
        """Whom the user ignores now (read from the database once, then kept current)."""
        history = self._ignored.get(user_id)
        while history is None:
            heard = self._ignores_heard
            loaded = parse_ignored(await self.hs.db.run(store.get_account_data, user_id, "", IGNORED_USER_LIST))
            # A write that finished while we read has set the newer list: keep it.
            history = self._ignored.get(user_id)
            if history is None and heard == self._ignores_heard:
                history = self._ignored[user_id] = ((0, loaded),) if loaded else _NOBODY
        return history[-1][1]

    def ignored_at(self, user_id: str, stream: int) -> frozenset[str]:
        """Whom the user ignored when the event at `stream` was persisted, as far as this
        process knows (call `ignored_users` first)."""
        history = self._ignored.get(user_id, _NOBODY)
        for since, users in reversed(history):
            if stream > since:
                return users
        return history[0][1]

    def ever_ignored_since(self, user_id: str, stream: int) -> bool:
        """Whether the list was non-empty at any time after `stream` (else no event needs
        the per-event check)."""
        history = self._ignored.get(user_id, _NOBODY)
        for i, (since, users) in enumerate(history):
            ends = history[i + 1][0] if i + 1 < len(history) else None
            if users and (ends is None or ends > stream):
                return True
        return False

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
