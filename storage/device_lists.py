"""Device-list changes: which users' devices or keys changed, by stream position."""
from __future__ import annotations

from storage import replication as repl_store
from storage.database import Cursor


def record_change(cur: Cursor, stream_id: int, user_id: str) -> None:
    cur.execute("INSERT INTO device_list_changes (stream_id, user_id) VALUES (%s, %s)"
                " ON CONFLICT DO NOTHING", (stream_id, user_id))


OUTBOX_STREAM = "device_list_outbox"


def queue_change(cur: Cursor, user_id: str, instance: str) -> None:
    """Away from the stream owner: keep the change for the owner, and tell it."""
    cur.execute("INSERT INTO device_list_outbox (user_id) VALUES (%s) RETURNING id", (user_id,))
    repl_store.announce(cur, OUTBOX_STREAM, instance, cur.fetchone()[0])


def queued_changes(cur: Cursor, limit: int) -> list[tuple[int, str]]:
    cur.execute("SELECT id, user_id FROM device_list_outbox ORDER BY id LIMIT %s", (limit,))
    return cur.fetchall()


def forget_queued(cur: Cursor, ids: list[int]) -> None:
    cur.execute("DELETE FROM device_list_outbox WHERE id = ANY(%s)", (ids,))


def changed_since(cur: Cursor, since: int, upto: int) -> list[str]:
    cur.execute("SELECT DISTINCT user_id FROM device_list_changes WHERE stream_id > %s"
                " AND stream_id <= %s", (since, upto))
    return [r[0] for r in cur.fetchall()]


def max_stream(cur: Cursor) -> int:
    cur.execute("SELECT COALESCE(max(stream_id), 0) FROM device_list_changes")
    return cur.fetchone()[0]


def sharing_changes(cur: Cursor, user_id: str, since_events: int,
                    upto_events: int) -> tuple[set[str], set[str]]:
    """Membership changes in the event range (since, upto] of rooms `user_id` has been
    joined to: (users who may now share a room with them, users who may no longer).
    A change of the user's own membership makes every joined member of that room a
    candidate; invites share nothing yet and are left out."""
    cur.execute(
        "SELECT rm.room_id, rm.user_id FROM events e JOIN room_memberships rm USING (event_id)"
        " WHERE e.type = 'm.room.member' AND rm.membership IN ('join', 'leave', 'ban')"
        " AND e.stream_ordering > %(since)s"
        " AND e.stream_ordering <= %(upto)s AND e.room_id IN (SELECT room_id FROM room_memberships"
        "  WHERE user_id = %(me)s AND membership = 'join' AND stream_ordering <= %(upto)s)",
        {"me": user_id, "since": since_events, "upto": upto_events})
    rows = cur.fetchall()
    candidates = {u for _, u in rows}
    own_rooms = sorted({r for r, u in rows if u == user_id})
    if own_rooms:
        cur.execute("SELECT state_key FROM current_state WHERE room_id = ANY(%s)"
                    " AND type = 'm.room.member' AND membership = 'join'",
                    (own_rooms,))
        candidates.update(r[0] for r in cur.fetchall())
    candidates.discard(user_id)
    sharing = set(users_sharing_room_with(cur, user_id, sorted(candidates)))
    return sharing, candidates - sharing


def users_sharing_room_with(cur: Cursor, user_id: str, candidates: list[str]) -> list[str]:
    """Those of `candidates` who are joined to a room `user_id` is joined to."""
    if not candidates:
        return []
    cur.execute(
        "SELECT DISTINCT other.state_key FROM current_state me"
        " JOIN current_state other ON other.room_id = me.room_id"
        "  AND other.type = 'm.room.member' AND other.membership = 'join'"
        " WHERE me.type = 'm.room.member' AND me.state_key = %s AND me.membership = 'join'"
        " AND other.state_key = ANY(%s)", (user_id, candidates))
    return [r[0] for r in cur.fetchall()]


def changes_between(cur: Cursor, after: int, upto: int, limit: int) -> list[tuple[int, str]]:
    """(stream_id, user_id) of device-list changes with after < stream_id <= upto."""
    cur.execute("SELECT stream_id, user_id FROM device_list_changes WHERE stream_id > %s AND stream_id <= %s"
                " ORDER BY stream_id LIMIT %s", (after, upto, limit))
    return cur.fetchall()
