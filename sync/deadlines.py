"""Long-poll timeouts grouped into slots of `resolution` seconds, for one reactor timer
in place of one per waiting request (sync/notifier.py). An entry is never removed
early: whoever holds the item tells, when its slot is due, whether it still waits; the
entries of items answered before their deadline are dropped in bulk by `compact`."""
from __future__ import annotations

import heapq
import math
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Deadlines(Generic[T]):
    def __init__(self, resolution: float) -> None:
        self.resolution = resolution
        self._slots: dict[int, list[T]] = {}
        self._heap: list[int] = []   # the slots in _slots, earliest first
        self.size = 0                # entries held, answered ones included

    def add(self, at: float, item: T) -> None:
        """`item` is due at `at` (it comes out of `due` at most `resolution` later)."""
        slot = math.ceil(at / self.resolution)
        items = self._slots.get(slot)
        if items is None:
            self._slots[slot] = items = []
            heapq.heappush(self._heap, slot)
        items.append(item)
        self.size += 1

    def next_at(self) -> float | None:
        """When the earliest slot is due (None: nothing held)."""
        return self._heap[0] * self.resolution if self._heap else None

    def due(self, now: float) -> list[T]:
        """Take every item whose slot is due at `now`, earliest first."""
        out: list[T] = []
        heap, slots = self._heap, self._slots
        while heap and heap[0] * self.resolution <= now:
            out.extend(slots.pop(heapq.heappop(heap)))
        self.size -= len(out)
        return out

    def compact(self, keep: Callable[[T], bool]) -> None:
        """Drop the entries whose items no longer wait."""
        for slot in list(self._slots):
            items = [i for i in self._slots[slot] if keep(i)]
            if items:
                self._slots[slot] = items
            else:
                del self._slots[slot]
        self._heap = sorted(self._slots)
        self.size = sum(len(items) for items in self._slots.values())
