"""The audit log: one row per admin action, login, failed login, deactivation, tenant
change, room deletion and purge."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from storage.database import Cursor

_COLUMNS = "id, ts, actor, action, target_user, target_room, tenant_id, ip, user_agent, details"


@dataclass
class AuditEntry:
    action: str
    ts: int
    actor: str | None = None
    target_user: str | None = None
    target_room: str | None = None
    tenant_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class AuditQuery:
    """Filters; `scoped` restricts to `tenant` (a tenant admin's view)."""
    action: str | None = None
    actor: str | None = None
    target_user: str | None = None
    target_room: str | None = None
    since_ts: int | None = None
    until_ts: int | None = None
    tenant: str | None = None
    scoped: bool = False


def add(cur: Cursor, e: AuditEntry) -> int:
    cur.execute(
        "INSERT INTO audit_log (ts, actor, action, target_user, target_room, tenant_id, ip, user_agent, details)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (e.ts, e.actor, e.action, e.target_user, e.target_room, e.tenant_id, e.ip, e.user_agent,
         json.dumps(e.details) if e.details else None))
    return cur.fetchone()[0]


def page(cur: Cursor, q: AuditQuery, after_id: int | None, limit: int, backwards: bool) -> list[dict]:
    """Entries in id order (newest first when `backwards`), strictly after `after_id`
    in that order."""
    where, params = [], []
    for column, value in (("action", q.action), ("actor", q.actor), ("target_user", q.target_user),
                          ("target_room", q.target_room)):
        if value is not None:
            where.append(f"{column} = %s")
            params.append(value)
    if q.since_ts is not None:
        where.append("ts >= %s")
        params.append(q.since_ts)
    if q.until_ts is not None:
        where.append("ts < %s")
        params.append(q.until_ts)
    if q.scoped:
        where.append("tenant_id = %s")
        params.append(q.tenant)
    if after_id is not None:
        where.append("id < %s" if backwards else "id > %s")
        params.append(after_id)
    clause = ("WHERE " + " AND ".join(where)) if where else ""
    cur.execute(f"SELECT {_COLUMNS} FROM audit_log {clause} ORDER BY id {'DESC' if backwards else 'ASC'}"
                " LIMIT %s", params + [limit])
    names = _COLUMNS.split(", ")
    out = []
    for row in cur.fetchall():
        entry = dict(zip(names, row))
        entry["details"] = json.loads(entry["details"]) if entry["details"] else {}
        out.append(entry)
    return out
