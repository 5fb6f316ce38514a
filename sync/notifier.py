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

Timeouts take no timer per waiter (cancelling thousands of them, and twisted.web's idle
timers, was a tenth of the answers' cost at 10,000): waiters are filed by deadline in
`DEADLINE_RESOLUTION`-wide slots (sync/deadlines.py) under one reactor timer for the
earliest slot; the expired go through the same sliced queue, answered "nothing new".

A second process could feed `notify_users` from PostgreSQL LISTEN/NOTIFY."""
from __future__ import annotations

import time
from collections import deque
from typing import Iterable

from twisted.internet import defer, reactor

from homeserver import held_writes, metrics
from sync.deadlines import Deadlines

SLICE_SECONDS = 0.01
DEADLINE_RESOLUTION = 0.05  # a long-poll times out at most this much late (and a drain slice)


class Notifier:
    def __init__(self) -> None:
        self._waiters: dict[str, set[defer.Deferred]] = {}
        # Set at shutdown: every waiting long-poll is answered and none waits again.
        self.closing = False
        self._ready: deque[defer.Deferred] = deque()    # woken: answered True
        self._expired: deque[defer.Deferred] = deque()  # timed out: answered False
        self._drain_scheduled = False
        self._deadlines: Deadlines[defer.Deferred] = Deadlines(DEADLINE_RESOLUTION)
        self._timer = None  # the reactor timer for the earliest deadline slot
        self._waiting = 0

    def waiting_count(self) -> int:
        return self._waiting

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
        if ready:
            self._schedule_drain()

    def _schedule_drain(self) -> None:
        if not self._drain_scheduled:
            self._drain_scheduled = True
            reactor.callLater(0, self._drain)

    def _drain(self) -> None:
        self._drain_scheduled = False
        deadline = time.perf_counter() + SLICE_SECONDS
        with held_writes.held():  # the slice's answers leave together at its end
            # The expired first: few, and never held back behind a stream of wake-ups.
            for queue, woken in ((self._expired, False), (self._ready, True)):
                while queue:
                    d = queue.popleft()
                    if not d.called:
                        d.callback(woken)  # resumes the long-poll: it builds and writes its response
                        if time.perf_counter() >= deadline:
                            break
                if queue:
                    break
        if self._ready or self._expired:
            self._schedule_drain()

    def _arm(self) -> None:
        """Keep the one timer on the earliest deadline slot."""
        at = self._deadlines.next_at()
        if at is None:
            return
        delay = max(0.0, at - time.monotonic())
        timer = self._timer
        if timer is not None and timer.active():
            if timer.getTime() <= reactor.seconds() + delay:
                return  # already due no later
            timer.cancel()
        self._timer = reactor.callLater(delay, self._expire)

    def _expire(self) -> None:
        self._timer = None
        expired = [d for d in self._deadlines.due(time.monotonic()) if not d.called]
        if expired:
            self._expired.extend(expired)
            self._schedule_drain()
        # Entries of waiters answered early pile up until their slot: drop them in bulk.
        if self._deadlines.size > 2 * self._waiting + 10_000:
            self._deadlines.compact(lambda d: not d.called)
        self._arm()

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
        self._deadlines.add(time.monotonic() + timeout_ms / 1000.0, d)
        self._arm()
        self._waiting += 1
        try:
            return await d
        finally:
            self._waiting -= 1
            waiters = self._waiters.get(user_id)
            if waiters is not None:
                waiters.discard(d)
                if not waiters:
                    del self._waiters[user_id]
