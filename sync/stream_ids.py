"""Stream id allocation for one writer process. An id is handed out before its write
starts; `current` only advances past ids whose transactions have finished, so a reader
never sees id N+1 while N may still commit and be skipped."""
from __future__ import annotations


class StreamIdGen:
    def __init__(self, start: int) -> None:
        self._last_allocated = start
        self._in_flight: set[int] = set()
        self._current = start

    @property
    def current(self) -> int:
        return self._current

    def allocate(self) -> int:
        self._last_allocated += 1
        self._in_flight.add(self._last_allocated)
        return self._last_allocated

    def finish(self, stream_id: int) -> None:
        """Mark a write finished (committed or failed: a failed id is simply a gap)."""
        self._in_flight.discard(stream_id)
        self._current = min(self._in_flight) - 1 if self._in_flight else self._last_allocated


class MemoryStream:
    """A counter for in-memory streams (typing, presence): positions restart with the
    process, and tokens from before a restart are treated as 'from the beginning'."""

    def __init__(self) -> None:
        self.current = 0

    def advance(self) -> int:
        self.current += 1
        return self.current
