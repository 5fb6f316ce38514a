"""Facts noted in memory on a busy path (a dict write) and written to PostgreSQL in
batches every few seconds and at shutdown, so requests never wait for them: where each
device was last seen, when media was last downloaded. The newest value per key wins."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, Generic, Hashable, TypeVar

from twisted.internet import defer, task

from storage.database import Cursor

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class WriteBehind(Generic[K, V]):
    def __init__(self, hs: "HomeServer", save: Callable[[Cursor, dict[K, V]], None], every_s: float,
                 what: str) -> None:
        self.hs = hs
        self.pending: dict[K, V] = {}
        self._save = save
        self._every_s = every_s
        self._what = what
        self._loop = task.LoopingCall(self.flush)

    def start(self) -> None:
        self._loop.start(self._every_s, now=False)

    def note(self, key: K, value: V) -> None:
        self.pending[key] = value

    def _take(self) -> dict[K, V]:
        batch, self.pending = self.pending, {}
        return batch

    def flush(self) -> defer.Deferred:
        """Write what is pending now."""
        batch = self._take()
        if not batch:
            return defer.succeed(None)

        def failed(f):  # keep the loop alive; the data is noted again on the next use
            logger.warning("saving %s failed: %s", self._what, f.getErrorMessage())
        return self.hs.db.run(self._save, batch).addErrback(failed)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()
        batch = self._take()
        if batch:
            self.hs.db.run_sync(self._save, batch)  # shutting down: blocking is fine
