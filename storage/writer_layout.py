"""The writers' layout by generation, their releases, and each process's internal URL
(homeserver/writer_layout.py)."""
from __future__ import annotations

import time

from storage import replication as repl_store
from storage.database import Cursor

INVALIDATION = "writer_layout"


def _now() -> int:
    return int(time.time() * 1000)


def latest(cur: Cursor) -> list[tuple[int, list[str]]]:
    """The newest two generations, newest first: (generation, writers)."""
    cur.execute("SELECT generation, writers FROM writer_layouts ORDER BY generation DESC LIMIT 2")
    return [(g, list(w)) for g, w in cur.fetchall()]


def releases(cur: Cursor, generation: int) -> set[str]:
    cur.execute("SELECT instance FROM writer_layout_releases WHERE generation = %s", (generation,))
    return {r[0] for r in cur.fetchall()}


def seed(cur: Cursor, writers: list[str]) -> None:
    """The first generation, from the config of the first process to start."""
    cur.execute("INSERT INTO writer_layouts (generation, writers, created_ts) VALUES (1, %s, %s)"
                " ON CONFLICT (generation) DO NOTHING", (writers, _now()))


def add_generation(cur: Cursor, writers: list[str], expected: int, passed_over: list[str] = ()) -> int:
    """A new generation after `expected`, announced in the same transaction; raises
    ValueError when another generation came first. `passed_over`: writers of the move before
    that never released it and have no session: their release is recorded first (a writer
    only cut off finds it when it comes back, and writes none of the rooms it lost)."""
    cur.execute("LOCK TABLE writer_layouts IN EXCLUSIVE MODE")
    found = latest(cur)
    if not found or found[0][0] != expected:
        raise ValueError("the layout changed meanwhile; look again")
    for instance in passed_over:
        pass_over(cur, expected, instance)
    generation = expected + 1
    cur.execute("INSERT INTO writer_layouts (generation, writers, created_ts) VALUES (%s, %s, %s)",
                (generation, writers, _now()))
    repl_store.notify(cur, {"inv": INVALIDATION, "k": f"{generation} {','.join(writers)}", "from": ""})
    return generation


def _release_lock(cur: Cursor, instance: str, shared: bool) -> None:
    """Orders a release recorded on a writer's behalf against that writer's batches."""
    cur.execute(f"SELECT pg_advisory_xact_lock{'_shared' if shared else ''}(727276, hashtext(%s))", (instance,))


def released_since(cur: Cursor, instance: str, generation: int) -> int | None:
    """In a writer's batch transaction: the newest generation at or after `generation`
    for which a release of it is recorded, if any."""
    _release_lock(cur, instance, shared=True)
    cur.execute("SELECT max(generation) FROM writer_layout_releases WHERE instance = %s AND generation >= %s",
                (instance, generation))
    return cur.fetchone()[0]


def pass_over(cur: Cursor, generation: int, instance: str) -> None:
    """Record the release of a writer that has no session left, on its behalf: from this
    commit on its batches for rooms it gave up are refused (`released_since`)."""
    _release_lock(cur, instance, shared=False)
    release(cur, generation, instance)


def release(cur: Cursor, generation: int, instance: str) -> None:
    cur.execute("INSERT INTO writer_layout_releases (generation, instance, released_ts) VALUES (%s, %s, %s)"
                " ON CONFLICT DO NOTHING", (generation, instance, _now()))
    repl_store.notify(cur, {"inv": INVALIDATION, "k": f"{generation} released {instance}", "from": ""})


def register_instance(cur: Cursor, name: str, role: str, url: str, slot: int | None) -> str | None:
    """Record this process's internal URL; returns the writer already holding `slot`,
    if another one does (their state group ids would collide)."""
    if slot is not None:
        cur.execute("LOCK TABLE worker_instances IN EXCLUSIVE MODE")  # two writers starting at once
        cur.execute("SELECT name FROM worker_instances WHERE state_group_slot = %s AND name <> %s", (slot, name))
        row = cur.fetchone()
        if row:
            return row[0]
    cur.execute(
        "INSERT INTO worker_instances (name, role, internal_url, state_group_slot, started_ts)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET role = EXCLUDED.role,"
        " internal_url = EXCLUDED.internal_url, state_group_slot = EXCLUDED.state_group_slot,"
        " started_ts = EXCLUDED.started_ts", (name, role, url, slot, _now()))
    return None


def instance_urls(cur: Cursor) -> dict[str, str]:
    cur.execute("SELECT name, internal_url FROM worker_instances")
    return dict(cur.fetchall())


def live_instances_with_role(cur: Cursor, role: str) -> list[str]:
    """Registered processes of `role` with a database session (named `hs:<instance>`)."""
    cur.execute("SELECT name FROM worker_instances w WHERE role = %s AND EXISTS (SELECT 1 FROM pg_stat_activity"
                " WHERE application_name = 'hs:' || w.name) ORDER BY name", (role,))
    return [r[0] for r in cur.fetchall()]
