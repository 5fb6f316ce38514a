"""Long admin operations (purge history, delete room) and their outcome, kept so their
status can be asked for later (and after a restart of the instance running one, which
fails what it interrupted)."""
from __future__ import annotations

import json
from typing import Any

from storage.database import Cursor

_COLUMNS = "id, kind, room_id, tenant_id, status, error, result, created_ts, updated_ts"


def create(cur: Cursor, task_id: str, kind: str, room_id: str, tenant_id: str | None, instance: str,
           now_ms: int) -> None:
    cur.execute("INSERT INTO admin_tasks (id, kind, room_id, tenant_id, instance, status, created_ts, updated_ts)"
                " VALUES (%s, %s, %s, %s, %s, 'scheduled', %s, %s)",
                (task_id, kind, room_id, tenant_id, instance, now_ms, now_ms))


def update(cur: Cursor, task_id: str, status: str, now_ms: int, result: Any = None,
           error: str | None = None) -> None:
    cur.execute("UPDATE admin_tasks SET status = %s, updated_ts = %s, error = COALESCE(%s, error),"
                " result = COALESCE(%s, result) WHERE id = %s",
                (status, now_ms, error, json.dumps(result) if result is not None else None, task_id))


def _row(r: tuple) -> dict:
    out = dict(zip(_COLUMNS.split(", "), r))
    out["result"] = json.loads(out["result"]) if out["result"] else None
    return out


def get(cur: Cursor, task_id: str) -> dict | None:
    cur.execute(f"SELECT {_COLUMNS} FROM admin_tasks WHERE id = %s", (task_id,))
    r = cur.fetchone()
    return _row(r) if r else None


def for_room(cur: Cursor, kind: str, room_id: str, since_ms: int) -> list[dict]:
    cur.execute(f"SELECT {_COLUMNS} FROM admin_tasks WHERE kind = %s AND room_id = %s"
                " AND (status IN ('scheduled', 'active') OR updated_ts >= %s) ORDER BY created_ts",
                (kind, room_id, since_ms))
    return [_row(r) for r in cur.fetchall()]


def fail_interrupted(cur: Cursor, instances: list[str] | None, now_ms: int) -> int:
    """At start-up: the unfinished tasks of `instances` (None: of every instance) were
    interrupted. Other instances' tasks may still be running."""
    sql = ("UPDATE admin_tasks SET status = 'failed', error = 'interrupted by a restart',"
           " updated_ts = %s WHERE status IN ('scheduled', 'active')")
    params: list = [now_ms]
    if instances is not None:
        sql += " AND instance = ANY(%s)"
        params.append(instances)
    cur.execute(sql, params)
    return cur.rowcount
