"""PostgreSQL access: a thread pool whose threads each hold one psycopg2 connection.
Every query runs on those threads, never on the reactor thread."""
from __future__ import annotations

import contextvars
import logging
import threading
import time
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
# The server ended the session (pg_terminate_backend, shutdown, crash recovery).
_SESSION_ENDED = {"57P01", "57P02", "57P03"}
_READ_TAGS = {"SELECT", "SHOW", "SET", "FETCH"}  # command tags of statements that change nothing
# Pauses between attempts while the database does not answer: about 2 s in all, enough to
# ride out a restart or failover without the client seeing it.
_BACKOFF_S = (0.05, 0.15, 0.3, 0.6, 1.0)
# Once the database has been unreachable this long, calls fail at once (one connection
# attempt, no pauses) instead of each holding a pool thread through the back-off.
_KNOWN_DOWN_S = 5.0


class NulCharacterError(ValueError):
    """A query argument held a NUL character, which PostgreSQL text cannot store."""


class DatabaseUnavailable(Exception):
    """PostgreSQL could not be reached, or the connection broke while a COMMIT was in
    flight (its outcome unknown). Clients are told to retry (503 with Retry-After)."""
    retry_after_s = 2


class _Cursor(psycopg2.extensions.cursor):
    """Notes whether its transaction changed anything, by each statement's command tag: a
    transaction that only read may run again even when its COMMIT failed."""
    wrote = False

    def execute(self, query, vars=None):
        result = super().execute(query, vars)
        if not self.wrote and (self.statusmessage or "").split(" ", 1)[0] not in _READ_TAGS:
            self.wrote = True
        return result

    def executemany(self, query, vars_list):
        self.wrote = True
        return super().executemany(query, vars_list)


def _connection_lost(conn: Any, error: Exception) -> bool:
    """Did `error` end the connection (as opposed to the query being wrong)?"""
    return bool(conn.closed) or isinstance(error, psycopg2.InterfaceError) \
        or getattr(error, "pgcode", None) in _SESSION_ENDED


class Database:
    def __init__(self, dsn: str, max_connections: int = 10) -> None:
        self.dsn = dsn
        self._pool = ThreadPool(minthreads=1, maxthreads=max_connections, name="db")
        self._local = threading.local()
        self._all_conns: list[Any] = []
        self._lock = threading.Lock()
        self._down_since: float | None = None  # monotonic time of the first failure in a row
        self.max_connections = max_connections
        self.in_use = 0  # transactions running now (read by the metrics)
        # Told (seconds, failed) after each transaction; set by the server for its metrics.
        self.observe: Callable[[float, bool], None] | None = None

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

    def _drop(self, conn: Any) -> None:
        self._local.conn = None
        with self._lock:
            if conn in self._all_conns:
                self._all_conns.remove(conn)
        try:
            conn.close()
        except Exception:  # already broken: nothing to close
            pass

    def _pause(self, attempt: int) -> bool:
        """Wait before attempt `attempt + 1`; False when there is no point retrying."""
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
        if attempt >= len(_BACKOFF_S) or now - self._down_since > _KNOWN_DOWN_S:
            return False
        time.sleep(_BACKOFF_S[attempt])
        return True

    def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(cursor, *args)` in one transaction on the calling thread. It is run
        again on serialization failures, and when the connection fails (or cannot be made)
        unless it wrote and its COMMIT was in flight; so `fn` must touch only the database
        (or do nothing else it cannot do twice: media files, `homeserver/media/repository.py`).
        Raises DatabaseUnavailable when the database stays out of reach."""
        attempt = 0
        while True:
            try:
                conn = self._connection()
            except psycopg2.OperationalError as e:
                if not self._pause(attempt):
                    raise DatabaseUnavailable(f"cannot connect to the database: {e}".strip()) from e
                attempt += 1
                continue
            outcome_unknown = False
            try:
                with conn.cursor(cursor_factory=_Cursor) as cur:
                    result = fn(cur, *args)
                outcome_unknown = cur.wrote  # a failed COMMIT of a read loses nothing
                conn.commit()
                self._down_since = None
                return result
            except _RETRYABLE:
                conn.rollback()
                attempt += 1
                if attempt >= len(_BACKOFF_S):
                    raise
            except psycopg2.Error as e:
                if not _connection_lost(conn, e):
                    conn.rollback()  # the query failed, the connection is fine
                    raise
                self._drop(conn)
                if outcome_unknown:
                    # The writes may or may not have landed: only the caller can tell.
                    raise DatabaseUnavailable("database connection lost during COMMIT") from e
                logger.warning("database connection lost (%s); retrying", str(e).strip())
                if not self._pause(attempt):
                    raise DatabaseUnavailable(f"database connection lost: {e}".strip()) from e
                attempt += 1
            except BaseException as e:
                if not conn.closed:
                    conn.rollback()
                if isinstance(e, ValueError) and "NUL (0x00)" in str(e):
                    raise NulCharacterError(str(e)) from e
                raise

    def run(self, fn: Callable[..., T], *args: Any):
        """Deferred of `fn(cursor, *args)` run in one transaction off the reactor thread.
        The caller's context (its request id, for the logs) goes along."""
        return threads.deferToThreadPool(reactor, self._pool, contextvars.copy_context().run,
                                         self._run_observed, fn, *args)

    def _run_observed(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            self.in_use += 1
        start = time.perf_counter()
        failed = True
        try:
            result = self.run_sync(fn, *args)
            failed = False
            return result
        finally:
            with self._lock:
                self.in_use -= 1
            if self.observe is not None:
                self.observe(time.perf_counter() - start, failed)


def execute_values(cur: Cursor, sql: str, rows: list[tuple], page_size: int = 500) -> None:
    if rows:
        psycopg2.extras.execute_values(cur, sql, rows, page_size=page_size)


def like_escape(text: str) -> str:
    """`text` matched literally inside a LIKE pattern (backslash is LIKE's escape)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
