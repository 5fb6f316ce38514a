"""Small async helpers on top of Twisted Deferreds."""
from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Awaitable, Callable, Hashable, TypeVar

from twisted.internet import defer

T = TypeVar("T")


class Coalescer:
    """Runs one call per key at a time; concurrent callers with the same key share its
    result (or its error) instead of starting their own."""

    def __init__(self) -> None:
        self._waiters: dict[Hashable, list[defer.Deferred]] = {}

    def running(self, key: Hashable) -> bool:
        return key in self._waiters

    def keys(self) -> list[Hashable]:
        """The keys with a call in progress."""
        return list(self._waiters)

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
    """One holder at a time per key; callers with the same key run one after another, in
    arrival order."""

    def __init__(self) -> None:
        self._locks: dict[Hashable, defer.DeferredLock] = {}

    @asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, defer.DeferredLock())
        await lock.acquire()
        try:
            yield
        finally:
            lock.release()
            if not lock.locked and not lock.waiting:
                self._locks.pop(key, None)

    async def run(self, key: Hashable, fn: Callable[[], Awaitable[T]]) -> T:
        async with self.hold(key):
            return await fn()


class Rerun:
    """Runs `fn` in the background when asked; asked again while it runs, it runs once
    more afterwards (never two at once). `fn` logs its own failures."""

    def __init__(self, fn: Callable[[], Awaitable[None]]) -> None:
        self._fn = fn
        self._running = False
        self._again = False

    def request(self) -> None:
        if self._running:
            self._again = True
            return
        self._running = True
        defer.ensureDeferred(self._loop())

    async def _loop(self) -> None:
        try:
            while True:
                self._again = False
                await self._fn()
                if not self._again:
                    return
        finally:
            self._running = False
