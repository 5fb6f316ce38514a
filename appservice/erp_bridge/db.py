"""PostgreSQL access for the bridge: a thread pool whose threads each hold one psycopg2
connection, so every query runs off the reactor thread; and the bridge's own versioned
migrations in its schema `erp_bridge`."""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, TypeVar

import psycopg2
import psycopg2.errors
import psycopg2.extensions
from twisted.internet import reactor, threads
from twisted.python.threadpool import ThreadPool

from appservice.erp_bridge.migrations import MIGRATIONS, SCHEMA

logger = logging.getLogger(__name__)
T = TypeVar("T")
Cursor = psycopg2.extensions.cursor

_RETRYABLE = (psycopg2.errors.SerializationFailure, psycopg2.errors.DeadlockDetected)
# Distinct from the homeserver's migration lock, so the two processes never wait on each other.
_MIGRATION_LOCK = 0x45525042  # "ERPB"


class SchemaTooNewError(RuntimeError):
    pass


class Database:
    def __init__(self, dsn: str, max_connections: int = 5) -> None:
        self.dsn = dsn
        self._pool = ThreadPool(minthreads=1, maxthreads=max_connections, name="erp-bridge-db")
        self._local = threading.local()
        self._conns: list[Any] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        self._pool.start()

    def stop(self) -> None:
        self._pool.stop()
        with self._lock:
            for conn in self._conns:
                try:
                    conn.close()
                except Exception:  # already dead: nothing to close
                    pass
            self._conns.clear()

    def _connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = psycopg2.connect(self.dsn, application_name="erp-bridge")
            conn.set_session(isolation_level="READ COMMITTED", autocommit=False)
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
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
                self._local.conn = None
                try:
                    conn.close()
                except Exception:  # the connection is gone either way
                    pass
                # Retry only if COMMIT was never sent: a commit in flight may have landed.
                if committing or attempt == 4:
                    raise
                logger.warning("database connection lost; reconnecting")
                time.sleep(0.2 * (attempt + 1))
            except BaseException:
                if not conn.closed:
                    conn.rollback()
                raise
        raise AssertionError("unreachable")

    def run(self, fn: Callable[..., T], *args: Any):
        """Deferred of `fn(cursor, *args)`, run in one transaction off the reactor thread."""
        return threads.deferToThreadPool(reactor, self._pool, self.run_sync, fn, *args)


def wait_for_database(dsn: str, timeout_s: float) -> None:
    """Block until PostgreSQL accepts a connection (the homeserver may still be starting
    its embedded cluster); raise the last error after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    delay = 0.2
    warned = False
    while True:
        try:
            psycopg2.connect(dsn, connect_timeout=5).close()
            return
        except psycopg2.OperationalError as e:
            if time.monotonic() + delay > deadline:
                raise
            if not warned:
                logger.info("waiting for the database: %s", str(e).strip().splitlines()[0])
                warned = True
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def code_version() -> int:
    return MIGRATIONS[-1][0] if MIGRATIONS else 0


def apply_migrations(cur: Cursor) -> int:
    """Bring the `erp_bridge` schema up to date inside the caller's transaction."""
    cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
    cur.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
    cur.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_version (version INT NOT NULL)")
    cur.execute(f"SELECT max(version) FROM {SCHEMA}.schema_version")
    row = cur.fetchone()
    have = row[0] if row and row[0] is not None else 0
    code = code_version()
    if have > code:
        raise SchemaTooNewError(
            f"the {SCHEMA} schema is version {have} but this bridge only knows up to {code}; "
            "refusing to run an older bridge against a newer database")
    for number, name, steps in MIGRATIONS:
        if number > have:
            logger.info("applying bridge schema migration %03d_%s", number, name)
            for step in steps:
                if callable(step):
                    step(cur)
                else:
                    cur.execute(step)
            cur.execute(f"INSERT INTO {SCHEMA}.schema_version (version) VALUES (%s)", (number,))
            have = number
    return have
