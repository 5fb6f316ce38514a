"""Event reports as the admin API lists them, with the room's name and canonical alias."""
from __future__ import annotations

from storage.database import Cursor

_SELECT = """
SELECT r.id, r.received_ts, r.room_id, r.event_id, r.reporter, r.reason, r.score, r.target_user_id,
  (SELECT (e.json::jsonb) -> 'content' ->> 'name' FROM current_state c JOIN events e USING (event_id)
   WHERE c.room_id = r.room_id AND c.type = 'm.room.name' AND c.state_key = '') AS name,
  (SELECT (e.json::jsonb) -> 'content' ->> 'alias' FROM current_state c JOIN events e USING (event_id)
   WHERE c.room_id = r.room_id AND c.type = 'm.room.canonical_alias' AND c.state_key = '') AS canonical_alias,
  rm.tenant_id
FROM content_reports r LEFT JOIN rooms rm ON rm.room_id = r.room_id
"""


def _report(row: tuple) -> dict:
    (rid, ts, room_id, event_id, reporter, reason, score, sender, name, alias, tenant) = row
    return {"id": rid, "received_ts": ts, "room_id": room_id, "name": name, "event_id": event_id,
            "user_id": reporter, "reason": reason, "score": score, "sender": sender,
            "canonical_alias": alias, "tenant_id": tenant}


def list_event_reports(cur: Cursor, start: int, limit: int, backwards: bool, user_id: str | None,
                       room_id: str | None, sender: str | None, tenant: str | None,
                       scoped: bool) -> tuple[list[dict], int]:
    where, params = ["r.kind = 'event'"], []
    for column, value in (("r.reporter", user_id), ("r.room_id", room_id), ("r.target_user_id", sender)):
        if value is not None:
            where.append(f"{column} = %s")
            params.append(value)
    if scoped:
        where.append("rm.tenant_id = %s")
        params.append(tenant)
    clause = " WHERE " + " AND ".join(where)
    cur.execute("SELECT count(*) FROM content_reports r LEFT JOIN rooms rm ON rm.room_id = r.room_id"
                + clause, params)
    total = cur.fetchone()[0]
    cur.execute(_SELECT + clause + f" ORDER BY r.received_ts {'DESC' if backwards else 'ASC'},"
                f" r.id {'DESC' if backwards else 'ASC'} LIMIT %s OFFSET %s", params + [limit, start])
    return [_report(r) for r in cur.fetchall()], total


def get_event_report(cur: Cursor, report_id: int) -> dict | None:
    cur.execute(_SELECT + " WHERE r.kind = 'event' AND r.id = %s", (report_id,))
    row = cur.fetchone()
    if row is None:
        return None
    report = _report(row)
    cur.execute("SELECT json FROM events WHERE event_id = %s", (report["event_id"],))
    found = cur.fetchone()
    report["event_json"] = found[0] if found else None
    return report


def delete_event_report(cur: Cursor, report_id: int) -> None:
    cur.execute("DELETE FROM content_reports WHERE kind = 'event' AND id = %s", (report_id,))
