"""Content reports: what users reported (an event, a room or a user), for moderators."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from storage.database import Cursor

_COLUMNS = "id, kind, received_ts, reporter, room_id, event_id, target_user_id, reason, score"


@dataclass
class Report:
    kind: str  # event | room | user
    received_ts: int
    reporter: str
    room_id: str | None = None
    event_id: str | None = None
    target_user_id: str | None = None
    reason: str | None = None
    score: int | None = None
    id: int | None = None


def add_report(cur: Cursor, report: Report) -> int:
    values = {k: v for k, v in asdict(report).items() if k != "id"}
    cur.execute(f"INSERT INTO content_reports ({', '.join(values)})"
                f" VALUES ({', '.join(['%s'] * len(values))}) RETURNING id", tuple(values.values()))
    return cur.fetchone()[0]


def list_reports(cur: Cursor, after_id: int = 0, limit: int = 100,
                 room_id: str | None = None) -> list[Report]:
    """Oldest first, from after `after_id`; optionally one room's only."""
    if room_id is None:
        cur.execute(f"SELECT {_COLUMNS} FROM content_reports WHERE id > %s ORDER BY id LIMIT %s",
                    (after_id, limit))
    else:
        cur.execute(f"SELECT {_COLUMNS} FROM content_reports WHERE room_id = %s AND id > %s"
                    " ORDER BY id LIMIT %s", (room_id, after_id, limit))
    return [Report(id=r[0], kind=r[1], received_ts=r[2], reporter=r[3], room_id=r[4], event_id=r[5],
                   target_user_id=r[6], reason=r[7], score=r[8]) for r in cur.fetchall()]
