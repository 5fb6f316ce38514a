"""A bounded in-memory log of (stream position, key) changes: which rooms got events,
typing or receipts, which users changed presence or devices. It answers "what changed
after position P" in time proportional to the answer, so a woken long-poll looks at the
few rooms that changed instead of every room the user is in. Positions older than what
the log keeps are answered with None: the caller falls back to its full check."""
from __future__ import annotations

import bisect

DEFAULT_KEEP = 50_000


class ChangeLog:
    def __init__(self, floor: int, keep: int = DEFAULT_KEEP) -> None:
        # Everything after `floor` that was recorded is here; positions are appended in
        # increasing order (a writer that hands out ids in order, or a memory counter).
        self.floor = floor
        self._keep = keep
        self._streams: list[int] = []
        self._keys: list[str] = []

    def record(self, stream: int, key: str) -> None:
        if self._streams and stream < self._streams[-1]:
            # Out of order (ids committed out of allocation order): keep the list sorted.
            i = bisect.bisect_right(self._streams, stream)
            self._streams.insert(i, stream)
            self._keys.insert(i, key)
        else:
            self._streams.append(stream)
            self._keys.append(key)
        if len(self._streams) > self._keep:
            drop = len(self._streams) - self._keep // 2
            self.floor = max(self.floor, self._streams[drop - 1])
            del self._streams[:drop]
            del self._keys[:drop]

    def changed_after(self, since: int, upto: int | None = None) -> set[str] | None:
        """Keys changed at positions in (since, upto]; None if the log cannot tell."""
        if since < self.floor:
            return None
        i = bisect.bisect_right(self._streams, since)
        if upto is None:
            return set(self._keys[i:])
        j = bisect.bisect_right(self._streams, upto, lo=i)
        return set(self._keys[i:j])

    def keys_after(self, since: int, at_most: int) -> list[str] | None:
        """The keys recorded after `since` (with repeats); None if the log cannot tell or
        there are more than `at_most` of them."""
        if since < self.floor:
            return None
        i = bisect.bisect_right(self._streams, since)
        if len(self._streams) - i > at_most:
            return None
        return self._keys[i:]
