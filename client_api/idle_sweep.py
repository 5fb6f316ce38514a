"""Idle HTTP connections are closed by one periodic sweep, not by a timer each.

twisted.web gives every connection a DelayedCall for its idle timeout, cancelled when a
request arrives and armed again when its answer is finished: with thousands of open
long-polls, each answer then pays an insertion into the reactor's heap of thousands of
timers (cold memory, one comparison per level). Measured with 10,000 woken long-polls,
dropping that timer and the long-poll's own (sync/notifier.py) cut the server's CPU for
the answers by about a tenth. A connection here only notes when it went idle; a sweep
every `SWEEP_SECONDS` closes those idle for longer than their period (so up to that much
late: the periods are hours)."""
from __future__ import annotations

import logging
import time
from typing import Protocol

from twisted.internet import task

SWEEP_SECONDS = 30.0
logger = logging.getLogger(__name__)


class Sweepable(Protocol):
    timeOut: float | None
    idle_since: float

    def timeoutConnection(self) -> None: ...


_open: set[Sweepable] = set()
_sweeper: task.LoopingCall | None = None


def track(channel: Sweepable) -> None:
    """Watch `channel` until `forget`; the sweep starts with the first one."""
    global _sweeper
    _open.add(channel)
    if _sweeper is None:
        _sweeper = task.LoopingCall(sweep)
        _sweeper.start(SWEEP_SECONDS, now=False)


def forget(channel: Sweepable) -> None:
    _open.discard(channel)


def sweep(now: float | None = None) -> int:
    """Time out every watched connection idle past its period; returns how many."""
    now = time.monotonic() if now is None else now
    expired = [c for c in _open if c.timeOut is not None and now - c.idle_since >= c.timeOut]
    for channel in expired:
        _open.discard(channel)  # closing: once is enough
        try:
            channel.timeoutConnection()
        except Exception:  # one connection must not stop the sweep for the others
            logger.exception("timing out an idle connection failed")
    return len(expired)
