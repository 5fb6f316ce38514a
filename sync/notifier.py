"""Wakes waiting /sync long-polls. Only the users concerned are woken: a room's members
for room events, typing and receipts; the recipient for to-device and account data;
users sharing a room for presence and device-list changes. Nothing polls the database.

A second process could feed `notify_users` from PostgreSQL LISTEN/NOTIFY."""
from __future__ import annotations

from typing import Iterable

from twisted.internet import defer, reactor


class Notifier:
    def __init__(self) -> None:
        self._waiters: dict[str, set[defer.Deferred]] = {}

    def notify_users(self, user_ids: Iterable[str]) -> None:
        for user_id in user_ids:
            waiters = self._waiters.pop(user_id, None)
            if waiters:
                for d in waiters:
                    if not d.called:
                        d.callback(True)

    async def wait(self, user_id: str, timeout_ms: int) -> bool:
        """True if woken, False on timeout."""
        d: defer.Deferred = defer.Deferred()
        self._waiters.setdefault(user_id, set()).add(d)
        timer = reactor.callLater(timeout_ms / 1000.0, lambda: d.called or d.callback(False))
        try:
            return await d
        finally:
            if timer.active():
                timer.cancel()
            waiters = self._waiters.get(user_id)
            if waiters is not None:
                waiters.discard(d)
                if not waiters:
                    del self._waiters[user_id]
