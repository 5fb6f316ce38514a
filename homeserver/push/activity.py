"""Who is syncing: a user with a /sync in flight, or one that ended less than a grace
period ago, is reading along, so pushers leave their phones quiet."""
from __future__ import annotations

import time


class SyncActivity:
    def __init__(self) -> None:
        self._in_flight: dict[str, int] = {}
        self._last_ended: dict[str, float] = {}

    def started(self, user_id: str) -> None:
        self._in_flight[user_id] = self._in_flight.get(user_id, 0) + 1

    def finished(self, user_id: str) -> None:
        left = self._in_flight.get(user_id, 1) - 1
        if left > 0:
            self._in_flight[user_id] = left
        else:
            self._in_flight.pop(user_id, None)
        self._last_ended[user_id] = time.monotonic()

    def is_active(self, user_id: str, grace_s: float) -> bool:
        if user_id in self._in_flight:
            return True
        ended = self._last_ended.get(user_id)
        if ended is None:
            return False
        if time.monotonic() - ended < grace_s:
            return True
        del self._last_ended[user_id]  # keep the map to recent syncers
        return False
