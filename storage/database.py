"""PostgreSQL access: a thread pool whose threads each hold one psycopg2 connection.
Every query runs on those threads, never on the reactor thread."""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, TypeVar

import psycopg2
import psycopg2.extensions
import psycopg2.extras
from twisted.internet import reactor, threads
from twisted.python.threadpool import ThreadPool

logger = logging.getLogger(__name__)
T = TypeVar("T")
Cursor = psycopg2.extensions.cursor

# Errors after which the whole transaction may be retried safely (nothing committed).
_RETRYABLE = (psycopg2.errors.SerializationFailure, psycopg2.errors.DeadlockDetected)


class NulCharacterError(ValueError):
    """A query argument held a NUL character, which PostgreSQL text cannot store."""


class Database:
    def __init__(self, dsn: str, max_connections: int = 10) -> None:
        self.dsn = dsn
        self._pool = ThreadPool(minthreads=1, maxthreads=max_connections, name="db")
        self._local = threading.local()
        self._all_conns: list[Any] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        self._pool.start()

    def stop(self) -> None:
        self._pool.stop()
        with self._lock:
            for conn in self._all_conns:
                try:
                    conn.close()
                except Exception:  # closing a dead connection: nothing to do
                    pass
            self._all_conns.clear()

    def _connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = psycopg2.connect(self.dsn)
            conn.set_session(isolation_level="READ COMMITTED", autocommit=False)
            self._local.conn = conn
            with self._lock:
                self._all_conns.append(conn)
        return conn

    def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(cursor, *args)` in one transaction on the calling thread."""
        for attempt in range(5):
            conn = self._connection()
            committing = False
            try:
                with conn.cursor() as cur:
                    result = fn(cur, *args)
                committing = True
                conn.commit()
                return result
            except _RETRYABLE:
                conn.rollback()
                if attempt == 4:
                    raise
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                # Lost connection: reconnect; retry only if we never reached COMMIT,
                # since a commit in flight may or may not have landed.
                self._local.conn = None
                if committing or attempt == 4:
                    raise
                logger.warning("database connection lost; reconnecting")
            except BaseException as e:
                if not conn.closed:
                    conn.rollback()
                if isinstance(e, ValueError) and "NUL (0x00)" in str(e):
                    raise NulCharacterError(str(e)) from e
                raise
        raise AssertionError("unreachable")

    def run(self, fn: Callable[..., T], *args: Any):
        """Deferred of `fn(cursor, *args)` run in one transaction off the reactor thread."""
        return threads.deferToThreadPool(reactor, self._pool, self.run_sync, fn, *args)


def execute_values(cur: Cursor, sql: str, rows: list[tuple], page_size: int = 500) -> None:
    if rows:
        psycopg2.extras.execute_values(cur, sql, rows, page_size=page_size)
