"""client_api/idle_sweep.py: idle connections closed by one sweep."""
from __future__ import annotations

from client_api import idle_sweep


class Conn:
    def __init__(self, period: float | None, idle_since: float) -> None:
        self.timeOut, self.idle_since, self.closed = period, idle_since, 0

    def timeoutConnection(self) -> None:
        self.closed += 1


def test_only_connections_idle_past_their_period_are_timed_out_once():
    idle = Conn(60.0, 0.0)
    busy = Conn(60.0, 50.0)           # active 50 s in: 10 s idle at 60
    handling = Conn(None, 0.0)        # a request in progress: no idle timeout
    gone = Conn(60.0, 0.0)
    for c in (idle, busy, handling, gone):
        idle_sweep._open.add(c)
    idle_sweep.forget(gone)
    try:
        assert idle_sweep.sweep(now=60.0) == 1
        assert (idle.closed, busy.closed, handling.closed, gone.closed) == (1, 0, 0, 0)
        assert idle_sweep.sweep(now=200.0) == 1  # busy is idle by now; idle is not asked twice
        assert (idle.closed, busy.closed, handling.closed) == (1, 1, 0)
    finally:
        for c in (idle, busy, handling, gone):
            idle_sweep.forget(c)
