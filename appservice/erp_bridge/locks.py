"""Per-key locks on the reactor: calls for the same tenant, user, object or message
transaction run one after another; different keys run concurrently."""
from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator, Hashable

from twisted.internet import defer


class KeyedLock:
    def __init__(self) -> None:
        self._locks: dict[Hashable, tuple[defer.DeferredLock, list[int]]] = {}

    @asynccontextmanager
    async def __call__(self, key: Hashable) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(key, (defer.DeferredLock(), [0]))
        users[0] += 1
        try:
            await lock.acquire()
            try:
                yield
            finally:
                lock.release()
        finally:
            users[0] -= 1
            if users[0] == 0:
                self._locks.pop(key, None)

    def __len__(self) -> int:
        return len(self._locks)
