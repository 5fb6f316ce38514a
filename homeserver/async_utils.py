"""Small async helpers on top of Twisted Deferreds."""
from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable, Hashable

from twisted.internet import defer


class Coalescer:
    """Runs one call per key at a time; concurrent callers with the same key share its
    result (or its error) instead of starting their own."""

    def __init__(self) -> None:
        self._waiters: dict[Hashable, list[defer.Deferred]] = {}

    async def run(self, key: Hashable, fn: Callable[[], Awaitable[Any]]) -> Any:
        waiters = self._waiters.get(key)
        if waiters is not None:
            d: defer.Deferred = defer.Deferred()
            waiters.append(d)
            return await d
        self._waiters[key] = []
        try:
            result = await fn()
        except Exception as e:
            for w in self._waiters.pop(key):
                w.errback(e)
            raise
        for w in self._waiters.pop(key):
            w.callback(result)
        return result


class KeyedLock:
    """One holder per key at a time; others with the same key wait their turn."""

    def __init__(self) -> None:
        self._waiters: dict[Hashable, list[defer.Deferred]] = {}

    @asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        while key in self._waiters:
            d: defer.Deferred = defer.Deferred()
            self._waiters[key].append(d)
            await d
        self._waiters[key] = []
        try:
            yield
        finally:
            for w in self._waiters.pop(key):
                w.callback(None)
