"""Stream id allocation for one writer process. An id is handed out before its write
starts; `current` only advances past ids whose transactions have finished, so a reader
never sees id N+1 while N may still commit and be skipped."""
from __future__ import annotations

from typing import Callable


class StreamIdGen:
    def __init__(self, start: int) -> None:
        self._last_allocated = start
        self._in_flight: set[int] = set()
        self._current = start
        # Several processes: told each new position (the stream owner announces it).
        self.on_advance: Callable[[int], None] | None = None

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
        before = self._current
        self._current = min(self._in_flight) - 1 if self._in_flight else self._last_allocated
        if self._current > before and self.on_advance is not None:
            self.on_advance(self._current)

    def restart_at(self, position: int) -> None:
        """A process following the stream: the writer's announced position, where it starts."""
        self._current = self._last_allocated = position

    def advance_to(self, position: int) -> None:
        """A process following the stream (another writes it): what it has read."""
        self._current = max(self._current, position)
        self._last_allocated = max(self._last_allocated, self._current)


class MemoryStream:
    """A counter for in-memory streams (typing, presence): positions restart with the
    process, and tokens from before a restart are treated as 'from the beginning'."""

    def __init__(self) -> None:
        self.current = 0

    def advance(self) -> int:
        self.current += 1
        return self.current

    def advance_to(self, position: int) -> None:
        self.current = max(self.current, position)
