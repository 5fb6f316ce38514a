"""Wakes waiting /sync long-polls. Only the users concerned are woken: a room's members
for room events, typing and receipts; the recipient for to-device and account data;
users sharing a room for presence and device-list changes. Nothing polls the database.

Waking is deferred and sliced. `notify_users` only moves the users' waiters to a queue
(so the caller, e.g. the persist listener that precedes a sender's 200, never waits for
the fan-out); the queue is drained on later reactor turns, each turn resuming waiters
(each builds and writes its response right there) for at most `SLICE_SECONDS` before
yielding, so the responses already built reach the network (together, at the slice's
end: `homeserver.held_writes`), and other requests are served, while the rest wait their
turn. A woken waiter costs the same however many were woken before it.

A second process could feed `notify_users` from PostgreSQL LISTEN/NOTIFY."""
from __future__ import annotations

import time
from collections import deque
from typing import Iterable

from twisted.internet import defer, reactor

from homeserver import held_writes, metrics

SLICE_SECONDS = 0.01


class Notifier:
    def __init__(self) -> None:
        self._waiters: dict[str, set[defer.Deferred]] = {}
        # Set at shutdown: every waiting long-poll is answered and none waits again.
        self.closing = False
        self._ready: deque[defer.Deferred] = deque()
        self._drain_scheduled = False

    def waiting_count(self) -> int:
        return sum(len(w) for w in self._waiters.values())

    def notify_users(self, user_ids: Iterable[str]) -> None:
        """Move the users' waiting long-polls to the ready queue; they are answered on the
        next reactor turns, a slice of work at a time, so the caller (a sender waiting for
        its 200) is never held up by the fan-out."""
        waiting = self._waiters
        ready = self._ready
        considered = woken = 0
        for user_id in user_ids:
            considered += 1
            waiters = waiting.pop(user_id, None)
            if waiters:
                woken += len(waiters)
                ready.extend(waiters)
        metrics.NOTIFIER_FANOUT.observe(considered)
        if woken:
            metrics.SYNC_WAKEUPS.inc(woken)
        if ready and not self._drain_scheduled:
            self._drain_scheduled = True
            reactor.callLater(0, self._drain)

    def _drain(self) -> None:
        self._drain_scheduled = False
        ready = self._ready
        deadline = time.perf_counter() + SLICE_SECONDS
        with held_writes.held():  # the slice's answers leave together at its end
            while ready:
                d = ready.popleft()
                if not d.called:
                    d.callback(True)  # resumes the long-poll: it builds and writes its response
                    if time.perf_counter() >= deadline:
                        break
        if ready:
            self._drain_scheduled = True
            reactor.callLater(0, self._drain)

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
