"""What several processes on one database share: the event stream sequence, each
writer's persisted-up-to position, events by stream range, and NOTIFY."""
from __future__ import annotations

import orjson

from storage.database import Cursor
from storage.events import EVENT_COLUMNS, StoredEvent, to_stored

CHANNEL = "hs_replication"


def sync_sequence(cur: Cursor) -> None:
    """Lift the sequence above every stored event (a single process wrote without it)."""
    cur.execute("SELECT pg_advisory_xact_lock(727275)")
    cur.execute("SELECT COALESCE(max(stream_ordering), 0) FROM events")
    top = cur.fetchone()[0]
    cur.execute("SELECT last_value, is_called FROM events_stream_seq")
    last, called = cur.fetchone()
    if (last if called else last - 1) < top:
        cur.execute("SELECT setval('events_stream_seq', %s)", (top,))


def allocate_stream_orderings(cur: Cursor, n: int) -> list[int]:
    cur.execute("SELECT nextval('events_stream_seq') FROM generate_series(1, %s)", (n,))
    return sorted(r[0] for r in cur.fetchall())


def allocated_up_to(cur: Cursor) -> int:
    """The highest stream ordering handed out so far, by any writer."""
    cur.execute("SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM events_stream_seq")
    return cur.fetchone()[0]


def positions(cur: Cursor, stream: str) -> dict[str, int]:
    cur.execute("SELECT instance, position FROM stream_positions WHERE stream = %s", (stream,))
    return dict(cur.fetchall())


def start_position(cur: Cursor, stream: str) -> int:
    """Where a starting writer's claim begins: the highest claim, or every stored event
    when none was ever made."""
    cur.execute("SELECT COALESCE(max(position), 0) FROM stream_positions WHERE stream = %s", (stream,))
    top = cur.fetchone()[0]
    if top == 0:
        cur.execute("SELECT COALESCE(max(stream_ordering), 0) FROM events")
        top = cur.fetchone()[0]
    return top


def announce(cur: Cursor, stream: str, instance: str, position: int) -> None:
    """Record and NOTIFY a claim; inside a writer's batch transaction, both land with it."""
    cur.execute(
        "INSERT INTO stream_positions (stream, instance, position) VALUES (%s, %s, %s)"
        " ON CONFLICT (stream, instance) DO UPDATE SET position ="
        " GREATEST(stream_positions.position, EXCLUDED.position)", (stream, instance, position))
    notify(cur, {"s": stream, "w": instance, "p": position})


def restart_claim(cur: Cursor, stream: str, instance: str, position: int) -> None:
    """A writer (re)starting sets its claim, before it allocates anything, to the
    highest claim of all: nothing of it is in flight."""
    cur.execute(
        "INSERT INTO stream_positions (stream, instance, position) VALUES (%s, %s, %s)"
        " ON CONFLICT (stream, instance) DO UPDATE SET position = EXCLUDED.position",
        (stream, instance, position))
    notify(cur, {"s": stream, "w": instance, "p": position})


def notify(cur: Cursor, payload: dict) -> None:
    cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, orjson.dumps(payload).decode()))


def events_between(cur: Cursor, after: int, upto: int) -> list[tuple[StoredEvent, str, str]]:
    """Live events with after < stream ordering <= upto, in order: (event, room, version)."""
    cur.execute(
        f"SELECT {EVENT_COLUMNS}, e.room_id, r.room_version FROM events e"
        " JOIN rooms r ON r.room_id = e.room_id"
        " WHERE e.stream_ordering > %s AND e.stream_ordering <= %s ORDER BY e.stream_ordering",
        (after, upto))
    return [(to_stored(r[:-2]), r[-2], r[-1]) for r in cur.fetchall()]


def push_results_between(cur: Cursor, after: int, upto: int) -> dict[int, list[tuple]]:
    """The push results the writers stored for these events: stream ordering ->
    [(user, thread, highlight, actions)], as the persist path hands them on."""
    cur.execute("SELECT stream_ordering, user_id, thread_id, highlight, actions FROM event_push_actions"
                " WHERE stream_ordering > %s AND stream_ordering <= %s", (after, upto))
    found: dict[int, list[tuple]] = {}
    for stream, user_id, thread_id, highlight, actions in cur.fetchall():
        found.setdefault(stream, []).append((user_id, thread_id, highlight, actions))
    return found


def live_sessions(cur: Cursor, application_name: str) -> int:
    cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (application_name,))
    return cur.fetchone()[0]
