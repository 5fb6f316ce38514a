"""`homeserver writers`: show the writers sharing the rooms, or move rooms between them
while they run (homeserver/writer_layout.py, docs/scaling.md)."""
from __future__ import annotations

import re
import time

from homeserver.config import INSTANCE_NAME_PATTERN, Config
from homeserver.replication import application_name
from homeserver.sharding import writer_for_room
from storage import replication as repl_store
from storage import writer_layout as store
from storage.database import Database

MOVE_WAIT_SECONDS = 120.0
INSTANCE_NAME = re.compile(INSTANCE_NAME_PATTERN)


def _describe(db: Database) -> tuple[int, list[str], list[str] | None, set[str]]:
    found = db.run_sync(store.latest)
    if not found:
        raise ValueError("no layout yet: start the processes of the deployment first")
    generation, writers = found[0]
    previous = found[1][1] if len(found) > 1 else None
    released = db.run_sync(store.releases, generation) if previous else set()
    return generation, writers, previous, released


def _registered_writers(db: Database) -> set[str]:
    def query(cur) -> set[str]:
        cur.execute("SELECT name FROM worker_instances WHERE role = 'writer'")
        return {r[0] for r in cur.fetchall()}
    return db.run_sync(query)


def show(config: Config, out=print) -> int:
    db = Database(_dsn(config), 1)
    try:
        generation, writers, previous, released = _describe(db)
    finally:
        db.stop()
    out(f"layout {generation}: {', '.join(writers)}")
    waiting = sorted(set(previous or ()) - released)
    if waiting:
        out(f"moving rooms: waiting for {', '.join(waiting)} to release those they give up")
    return 0


def set_writers(config: Config, writers: list[str], wait: bool = True, out=print) -> int:
    """Write a new generation; with `wait`, report until every previous writer released."""
    if not writers or len(set(writers)) != len(writers):
        raise ValueError("list each writer once")
    bad = [w for w in writers if not INSTANCE_NAME.match(w)]
    if bad:
        raise ValueError(f"not an instance name: {', '.join(bad)}")
    db = Database(_dsn(config), 1)
    try:
        generation, current, previous, released = _describe(db)
        not_released = sorted(set(previous or ()) - released)
        gone = [w for w in not_released if not db.run_sync(repl_store.live_sessions, application_name(w))]
        unfinished = [w for w in not_released if w not in gone]
        if unfinished:
            raise ValueError(f"layout {generation} is still moving rooms ({', '.join(unfinished)} "
                             "not released); try again when it is done")
        unknown = sorted(set(writers) - _registered_writers(db))
        if unknown:
            raise ValueError(f"{', '.join(unknown)} never started as a writer: start it first "
                             "(role writer, listed at the end of its worker.writers)")
        down = [w for w in writers if not db.run_sync(repl_store.live_sessions, application_name(w))]
        if down:
            raise ValueError(f"{', '.join(down)} is not running: start it first")
        if writers == current:
            out(f"layout {generation} already has these writers")
            return 0
        new = db.run_sync(store.add_generation, writers, generation, gone)  # the gone are passed over
        moving = _share_moving(current, writers)
        out(f"layout {new}: {', '.join(writers)} (about {moving:.0%} of the rooms change writer)")
        if not wait:
            return 0
        deadline = time.monotonic() + MOVE_WAIT_SECONDS
        while True:
            left = sorted(set(current) - db.run_sync(store.releases, new))
            if not left:
                out("done: every room is built by its new writer")
                return 0
            if time.monotonic() > deadline:
                out(f"still waiting for {', '.join(left)} (a writer that is down is passed over when the"
                    " next write to one of its rooms arrives, or releases when it starts)")
                return 1
            time.sleep(0.2)
    finally:
        db.stop()


def _share_moving(before: list[str], after: list[str], sample: int = 2000) -> float:
    """The share of room ids whose writer changes, estimated on made-up ids."""
    ids = [f"!sample{i}:x" for i in range(sample)]
    return sum(writer_for_room(r, before) != writer_for_room(r, after) for r in ids) / sample


def _dsn(config: Config) -> str:
    if config.database.dsn is None:
        raise ValueError("several processes share a PostgreSQL: set database.dsn")
    return config.database.dsn
