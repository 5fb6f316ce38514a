"""Typing notifications: in memory, each with its own expiry timer (with several sync
processes the stream owner also writes them to `typing_stream`: sync/stream_followers.py)."""
from __future__ import annotations

from typing import Callable

from twisted.internet import reactor
from twisted.internet.base import DelayedCall

from sync.change_log import ChangeLog
from sync.stream_ids import MemoryStream

MAX_TIMEOUT_MS = 120_000


class Typing:
    def __init__(self, on_change: Callable[[str], None]) -> None:
        self.stream = MemoryStream()
        self._typing: dict[str, dict[str, DelayedCall]] = {}   # room -> user -> expiry timer
        self._room_stream: dict[str, int] = {}
        self.log = ChangeLog(0)  # (stream, room) of every change, for woken long-polls
        self._on_change = on_change  # told the room id; wakes its members
        # Several sync processes: the stream owner tells each change (room, stream id); a
        # process following it wakes the room's members (and emits nothing: the owner does).
        self.on_recorded: Callable[[str, int], None] | None = None
        self.on_followed: Callable[[str], None] = on_change

    def set_typing(self, room_id: str, user_id: str, typing: bool, timeout_ms: int) -> None:
        users = self._typing.setdefault(room_id, {})
        timer = users.pop(user_id, None)
        was_typing = timer is not None
        if timer is not None and timer.active():
            timer.cancel()
        if typing:
            delay = min(max(timeout_ms, 0), MAX_TIMEOUT_MS) / 1000.0
            users[user_id] = reactor.callLater(delay, self._expire, room_id, user_id)
        if typing != was_typing or typing:
            self._changed(room_id)

    def _expire(self, room_id: str, user_id: str) -> None:
        users = self._typing.get(room_id, {})
        if users.pop(user_id, None) is not None:
            self._changed(room_id)

    def _changed(self, room_id: str) -> None:
        self._room_stream[room_id] = self.stream.advance()
        self.log.record(self._room_stream[room_id], room_id)
        if self.on_recorded is not None:
            self.on_recorded(room_id, self._room_stream[room_id])
        self._on_change(room_id)

    def restart_at(self, position: int) -> None:
        """Several sync processes: ids go on from those already written (tokens hold them),
        on the owner and on the processes following it."""
        self.stream.current = position
        self.log = ChangeLog(position)

    def follow(self, rows: list[tuple[int, str, list[str]]]) -> None:
        """Several sync processes: typing as the stream owner wrote it (it expires it, and
        clears it for every room when it restarts)."""
        for stream_id, room_id, users in rows:
            if users:
                self._typing[room_id] = dict.fromkeys(users)  # type: ignore[arg-type]  # no timers here
            else:
                self._typing.pop(room_id, None)
            self._room_stream[room_id] = stream_id
            self.stream.advance_to(stream_id)
            self.log.record(stream_id, room_id)
            self.on_followed(room_id)

    def clear_followed(self, room_id: str) -> None:
        """The owner restarting: a room its table last showed someone typing in, now
        nobody (written for the processes following it)."""
        self._typing.setdefault(room_id, {})
        self._changed(room_id)

    def typing_users(self, room_id: str) -> list[str]:
        return sorted(self._typing.get(room_id, {}))

    def changed_since(self, room_id: str, since: int) -> bool:
        # A token from a previous process (position beyond ours) means: send everything.
        if since > self.stream.current:
            return room_id in self._typing
        return self._room_stream.get(room_id, 0) > since
