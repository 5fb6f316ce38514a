"""Answers written during a burst go out together at its end.

Waking thousands of long-polls is a loop of build-an-answer, send-it. Measured on this
machine, a loopback `send()` costs about twice as much when it is interleaved with Python
work as when the sends come back to back: each one wakes a receiver that has gone back
to sleep in the meantime. So while a burst is open (`held()`), a connection that would
send an answer at once holds it instead and registers here; when the burst closes every
held answer is sent, one send after another. The notifier opens a burst per slice of
woken long-polls (at most `sync.notifier.SLICE_SECONDS`, so an answer waits at most that
long). Outside a burst nothing is held.

A holder is anything with `send_held()`: the HTTP channel, which also sends what it
holds before anything else it writes, before closing and before Twisted parses a
pipelined request (which Twisted may answer straight to the socket), so order on a
connection is kept (`client_api.http.LimitedChannel`)."""
from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator, Protocol

logger = logging.getLogger(__name__)


class Holder(Protocol):
    def send_held(self) -> None: ...


_open = False
_holders: list[Holder] = []


def holding() -> bool:
    """Whether a burst is open (a holder then holds instead of sending)."""
    return _open


def register(holder: Holder) -> None:
    """`holder` holds an answer: call its `send_held()` when the burst closes."""
    _holders.append(holder)


@contextmanager
def held() -> Iterator[None]:
    """Hold answers written inside; send them all on the way out (also on error). Nested
    bursts are part of the outer one."""
    global _open
    if _open:
        yield
        return
    _open = True
    try:
        yield
    finally:
        _open = False
        send_all()


def send_all() -> None:
    global _holders
    holders, _holders = _holders, []
    for holder in holders:
        try:
            holder.send_held()
        except Exception:  # one broken connection must not keep the others' answers
            logger.exception("sending a held answer failed")
