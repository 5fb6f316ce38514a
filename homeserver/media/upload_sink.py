"""A streaming sink for an upload: chunks arriving on the reactor are hashed (SHA-256) and
written to a temporary file by a worker thread, one batch at a time and in order. When
more than HIGH_WATER bytes wait for the disk, the connection stops being read (TCP
back-pressure) until the worker catches up, so an upload never sits in memory.

It is also the request's `content` object while the body arrives (twisted.web calls
`write`, `tell`, `seek` and `close` on it): `close()` before `finish()` discards the file."""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from twisted.internet import defer, reactor, threads
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

logger = logging.getLogger(__name__)

HIGH_WATER = 1 << 20   # bytes waiting for the disk before reading pauses


class Producer(Protocol):
    def pauseProducing(self) -> None: ...
    def resumeProducing(self) -> None: ...


@dataclass(frozen=True)
class ReceivedFile:
    path: Path
    sha256: str
    size: int


class UploadSink:
    def __init__(self, tmp_dir: Path, pool: ThreadPool, producer: Producer | None = None) -> None:
        self._tmp_dir = tmp_dir
        self._pool = pool
        self._producer = producer
        self._paused = False
        self._hash = hashlib.sha256()
        self._file: Any = None
        self._path: Path | None = None
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._busy = False
        self._idle_waiters: list[defer.Deferred] = []
        self._error: BaseException | None = None
        self._closed = False      # discarded
        self._finished = False    # handed over by finish()
        self.size = 0

    # --- the file-like face twisted.web sees ---------------------------------------------

    def write(self, data: bytes) -> None:
        if self._closed or self._finished or not data:
            return
        self.size += len(data)
        self._pending.append(data)
        self._pending_bytes += len(data)
        if not self._busy:
            self._flush()
        if self._pending_bytes > HIGH_WATER and self._producer is not None and not self._paused:
            self._paused = True
            self._producer.pauseProducing()

    def tell(self) -> int:
        return self.size

    def seek(self, *_: Any) -> int:
        return 0

    def close(self) -> None:
        """Discard the upload unless `finish()` has handed it over."""
        if self._finished or self._closed:
            return
        self._closed = True
        self._pending = []
        self._pending_bytes = 0
        self._resume_reading()
        self._when_idle(self._discard)

    # --- worker --------------------------------------------------------------------------

    def _flush(self) -> None:
        chunks, self._pending, self._pending_bytes = self._pending, [], 0
        self._busy = True
        d = threads.deferToThreadPool(reactor, self._pool, self._write_chunks, chunks)
        d.addBoth(self._flushed)

    def _write_chunks(self, chunks: list[bytes]) -> None:  # worker thread
        if self._error is not None:
            return
        if self._file is None:
            self._open()
        for chunk in chunks:
            self._hash.update(chunk)
            self._file.write(chunk)

    def _open(self) -> None:  # worker thread
        fd, name = tempfile.mkstemp(dir=self._tmp_dir, prefix="upload-")
        self._path = Path(name)
        self._file = os.fdopen(fd, "wb", buffering=1 << 16)

    def _flushed(self, result: Any) -> None:
        self._busy = False
        if isinstance(result, Failure):
            self._error = result.value
            logger.error("writing an upload failed: %s", self._error)
            self._pending, self._pending_bytes = [], 0
        if self._pending and not self._closed:
            self._flush()
            if self._pending_bytes <= HIGH_WATER:
                self._resume_reading()
            return
        self._resume_reading()
        waiters, self._idle_waiters = self._idle_waiters, []
        for w in waiters:
            w.callback(None)

    def _resume_reading(self) -> None:
        if self._paused and self._producer is not None:
            self._paused = False
            try:
                self._producer.resumeProducing()
            except Exception:  # the connection is already gone
                pass

    def _when_idle(self, fn: Any) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        if self._busy:
            self._idle_waiters.append(d)
        else:
            d.callback(None)
        d.addCallback(lambda _: threads.deferToThreadPool(reactor, self._pool, fn))
        return d

    def _discard(self) -> None:  # worker thread
        if self._file is not None:
            self._file.close()
        if self._path is not None:
            self._path.unlink(missing_ok=True)

    def _seal(self) -> ReceivedFile:  # worker thread
        if self._file is None:
            self._open()  # an empty upload is still a file
        self._file.flush()
        os.fsync(self._file.fileno())  # a 200 means the bytes are on disk
        self._file.close()
        assert self._path is not None
        return ReceivedFile(self._path, self._hash.hexdigest(), self.size)

    async def finish(self) -> ReceivedFile:
        """Wait for every chunk to reach the disk; the caller then owns the temporary file."""
        if self._closed:
            raise RuntimeError("the upload was discarded")
        self._finished = True
        while self._busy or self._pending:
            if not self._busy:
                self._flush()
            d: defer.Deferred = defer.Deferred()
            self._idle_waiters.append(d)
            await d
        if self._error is not None:
            await threads.deferToThreadPool(reactor, self._pool, self._discard)
            raise OSError(f"could not store the upload: {self._error}")
        return await threads.deferToThreadPool(reactor, self._pool, self._seal)
