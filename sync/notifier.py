"""Wakes waiting /sync long-polls. Only the users concerned are woken: a room's members
for room events, typing and receipts; the recipient for to-device and account data;
users sharing a room for presence and device-list changes. Nothing polls the database.

A second process could feed `notify_users` from PostgreSQL LISTEN/NOTIFY."""
from __future__ import annotations

from typing import Iterable

from twisted.internet import defer, reactor

from homeserver import metrics


class Notifier:
    def __init__(self) -> None:
        self._waiters: dict[str, set[defer.Deferred]] = {}
        # Set at shutdown: every waiting long-poll is answered and none waits again.
        self.closing = False

    def waiting_count(self) -> int:
        return sum(len(w) for w in self._waiters.values())

    def notify_users(self, user_ids: Iterable[str]) -> None:
        considered = woken = 0
        for user_id in user_ids:
            considered += 1
            waiters = self._waiters.pop(user_id, None)
            if waiters:
                for d in waiters:
                    if not d.called:
                        woken += 1
                        d.callback(True)
        metrics.NOTIFIER_FANOUT.observe(considered)
        if woken:
            metrics.SYNC_WAKEUPS.inc(woken)

    def close(self) -> None:
        """Shutdown: wake every long-poll so it answers with what it has."""
        self.closing = True
        self.notify_users(list(self._waiters))

    async def wait(self, user_id: str, timeout_ms: int) -> bool:
        """True if woken, False on timeout (at once while closing)."""
        if self.closing:
            return False
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
