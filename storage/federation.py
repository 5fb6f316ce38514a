"""Federation storage: other servers' keys, inbound transaction ids, the outbound
queues, and the parts of persisting remote events the local path does not need."""
from __future__ import annotations

from typing import Any

from storage import events as events_store
from storage.database import Cursor, execute_values


# ---- server keys -------------------------------------------------------------------

def store_server_keys(cur: Cursor, rows: list[tuple]) -> None:
    """rows: (server_name, key_id, verify_key, valid_until_ts, expired_ts, fetched_ts, key_json).
    A key's longest known validity wins."""
    execute_values(
        cur,
        "INSERT INTO server_keys (server_name, key_id, verify_key, valid_until_ts, expired_ts,"
        " fetched_ts, key_json) VALUES %s ON CONFLICT (server_name, key_id) DO UPDATE SET"
        " valid_until_ts = EXCLUDED.valid_until_ts, expired_ts = EXCLUDED.expired_ts,"
        " fetched_ts = EXCLUDED.fetched_ts, key_json = EXCLUDED.key_json"
        " WHERE server_keys.valid_until_ts <= EXCLUDED.valid_until_ts",
        rows,
    )


def get_server_keys(cur: Cursor, server_name: str) -> list[tuple]:
    """(key_id, verify_key, valid_until_ts, expired_ts, key_json) of one server."""
    cur.execute("SELECT key_id, verify_key, valid_until_ts, expired_ts, key_json FROM server_keys"
                " WHERE server_name = %s", (server_name,))
    return cur.fetchall()


# ---- remote events in the persist transaction ----------------------------------------

def before_persist(cur: Cursor, rows: list) -> None:
    """Remote events that were held as outliers leave that row for their timeline one."""
    execute_values(cur, "DELETE FROM events WHERE outlier AND event_id IN (VALUES %s)",
                   [(r.event_id,) for r in rows if r.remote.replaces_outlier])


def after_persist(cur: Cursor, rows: list) -> None:
    """What state resolution adds for remote events: the groups of resolved states, and
    which group is the room's current state."""
    groups = [(r.room_id, g) for r in rows for g in r.remote.extra_state_groups]
    insert_state_groups(cur, groups)
    execute_values(cur, "INSERT INTO remote_rooms (room_id, tenant_id) VALUES %s ON CONFLICT DO NOTHING",
                   [(r.room_id, r.new_room[2]) for r in rows if r.new_room])
    heads: dict[str, tuple] = {}
    for r in rows:
        if r.remote.room_state_group is not None:
            heads[r.room_id] = (r.room_id, *r.remote.room_state_group, r.stream_ordering)
    execute_values(
        cur,
        "INSERT INTO room_state_heads (room_id, state_group, chain_length, stream_ordering) VALUES %s"
        " ON CONFLICT (room_id) DO UPDATE SET state_group = EXCLUDED.state_group,"
        " chain_length = EXCLUDED.chain_length, stream_ordering = EXCLUDED.stream_ordering",
        list(heads.values()),
    )


def insert_state_groups(cur: Cursor, groups: list[tuple[str, Any]]) -> None:
    """groups: (room_id, NewStateGroup)."""
    execute_values(cur, "INSERT INTO state_groups (id, room_id, prev_group, chain_length) VALUES %s",
                   [(g.id, room_id, g.prev_group, g.chain_length) for room_id, g in groups])
    execute_values(cur, "INSERT INTO state_group_entries (state_group, type, state_key, event_id) VALUES %s",
                   [(g.id, t, sk, eid) for _, g in groups for (t, sk), eid in g.entries.items()])


# ---- events outside the live stream: outliers and backfilled history ---------------

def persist_historic(cur: Cursor, rows: list, outlier: bool, now_ms: int) -> None:
    """Events that are not new to the room (outliers; backfilled history): stream
    orderings from the negative sequence, no change to current state or extremities.
    An event already stored is left alone, except that a backfilled event replaces its
    outlier row (it joins the timeline)."""
    if not rows:
        return
    ids = [r.event_id for r in rows]
    cur.execute("SELECT event_id, outlier FROM events WHERE event_id = ANY(%s)", (ids,))
    have = dict(cur.fetchall())
    if not outlier:
        replaced = [eid for eid, was_outlier in have.items() if was_outlier]
        if replaced:
            cur.execute("DELETE FROM events WHERE event_id = ANY(%s)", (replaced,))
            for eid in replaced:
                del have[eid]
    rows = [r for r in rows if r.event_id not in have]
    if not rows:
        return
    cur.execute("SELECT nextval('event_historic_stream') FROM generate_series(1, %s)", (len(rows),))
    for r, (so,) in zip(rows, cur.fetchall()):
        r.stream_ordering = so
    execute_values(
        cur,
        "INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender, depth,"
        " origin_server_ts, received_ts, state_group, redacts, unsigned_json, json, outlier) VALUES %s"
        " ON CONFLICT (event_id) DO NOTHING",
        [(r.stream_ordering, r.event_id, r.room_id, r.type, r.state_key, r.sender, r.depth,
          r.origin_server_ts, r.received_ts, r.state_group, r.redacts, r.unsigned_json, r.json, outlier)
         for r in rows],
    )
    execute_values(cur, "INSERT INTO event_edges (event_id, prev_event_id) VALUES %s ON CONFLICT DO NOTHING",
                   [(r.event_id, p) for r in rows for p in r.prev_events])
    execute_values(cur, "INSERT INTO event_auth (event_id, auth_id) VALUES %s ON CONFLICT DO NOTHING",
                   [(r.event_id, a) for r in rows for a in r.auth_events])
    insert_state_groups(cur, [(r.room_id, r.new_state_group) for r in rows if r.new_state_group])
    if not outlier:
        events_store.insert_memberships(cur, rows, ignore_existing=True)
        execute_values(
            cur, "UPDATE events SET redacted_by = v.by FROM (VALUES %s) AS v(target, by, room)"
            " WHERE events.event_id = v.target AND events.room_id = v.room AND events.redacted_by IS NULL",
            [(r.redacts, r.event_id, r.room_id) for r in rows if r.apply_redaction and r.redacts],
        )


def store_rejected(cur: Cursor, rows: list[tuple]) -> None:
    """rows: (event_id, room_id, json, reason, state_group, received_ts)."""
    execute_values(cur, "INSERT INTO rejected_events (event_id, room_id, json, reason, state_group, received_ts)"
                   " VALUES %s ON CONFLICT (event_id) DO NOTHING", rows)


def event_statuses(cur: Cursor, event_ids: list[str]) -> dict[str, tuple[str, int]]:
    """event_id -> ("timeline" | "outlier" | "rejected", state group) of those stored."""
    if not event_ids:
        return {}
    cur.execute("SELECT event_id, outlier, state_group FROM events WHERE event_id = ANY(%s)", (event_ids,))
    out = {eid: ("outlier" if outlier else "timeline", sg) for eid, outlier, sg in cur.fetchall()}
    cur.execute("SELECT event_id, state_group FROM rejected_events WHERE event_id = ANY(%s)", (event_ids,))
    out.update({eid: ("rejected", sg) for eid, sg in cur.fetchall()})
    return out


def get_rejected(cur: Cursor, event_ids: list[str]) -> dict[str, str]:
    """event_id -> json of rejected events among `event_ids`."""
    if not event_ids:
        return {}
    cur.execute("SELECT event_id, json FROM rejected_events WHERE event_id = ANY(%s)", (event_ids,))
    return dict(cur.fetchall())


def state_group_with_chain(cur: Cursor, group: int) -> tuple[dict[tuple[str, str], str], int]:
    from storage.state import get_state_group_map
    cur.execute("SELECT chain_length FROM state_groups WHERE id = %s", (group,))
    row = cur.fetchone()
    return get_state_group_map(cur, group), (row[0] if row else 0)


def auth_chain_ids(cur: Cursor, event_ids: list[str]) -> set[str]:
    """Every event reachable from `event_ids` through auth edges (not including them)."""
    if not event_ids:
        return set()
    cur.execute(
        "WITH RECURSIVE chain(id) AS ("
        "  SELECT auth_id FROM event_auth WHERE event_id = ANY(%s)"
        "  UNION SELECT a.auth_id FROM event_auth a JOIN chain c ON a.event_id = c.id)"
        " SELECT id FROM chain", (list(event_ids),))
    return {r[0] for r in cur.fetchall()}


# ---- inbound transactions -----------------------------------------------------------

def get_inbound_txn(cur: Cursor, origin: str, txn_id: str) -> str | None:
    cur.execute("SELECT response_json FROM federation_inbound_txns WHERE origin = %s AND txn_id = %s",
                (origin, txn_id))
    row = cur.fetchone()
    return row[0] if row else None


def put_inbound_txn(cur: Cursor, origin: str, txn_id: str, response_json: str, now_ms: int) -> None:
    cur.execute("INSERT INTO federation_inbound_txns (origin, txn_id, response_json, received_ts)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING", (origin, txn_id, response_json, now_ms))
    # A day of transaction ids is plenty for retries.
    cur.execute("DELETE FROM federation_inbound_txns WHERE received_ts < %s", (now_ms - 86_400_000,))


def set_state_group(cur: Cursor, event_id: str, room_id: str, group) -> None:
    """Give an outlier (or a rejected event) the state group learnt for it later."""
    insert_state_groups(cur, [(room_id, group)])
    cur.execute("UPDATE events SET state_group = %s WHERE event_id = %s", (group.id, event_id))
    cur.execute("UPDATE rejected_events SET state_group = %s WHERE event_id = %s", (group.id, event_id))


# ---- outbound queues ----------------------------------------------------------------

def queue_outbound(cur: Cursor, rows: list[tuple[str, str | None, str | None]], now_ms: int,
                   stream_ordering: int | None = None) -> None:
    """rows: (destination, event_id, edu_json); with `stream_ordering`, also records that
    local events up to it are queued."""
    execute_values(cur, "INSERT INTO federation_outbox (destination, event_id, edu_json, created_ts) VALUES %s",
                   [(d, e, j, now_ms) for d, e, j in rows])
    if stream_ordering is not None:
        cur.execute("UPDATE federation_stream_position SET stream_ordering = GREATEST(stream_ordering, %s)",
                    (stream_ordering,))


def queued_position(cur: Cursor) -> int:
    cur.execute("SELECT stream_ordering FROM federation_stream_position")
    row = cur.fetchone()
    return row[0] if row else 0


def local_events_after(cur: Cursor, after: int, server_name: str, limit: int) -> list[tuple[int, str, str]]:
    """(stream_ordering, event_id, room_id) of this server's events after a position."""
    cur.execute("SELECT stream_ordering, event_id, room_id FROM events WHERE stream_ordering > %s"
                " AND sender LIKE %s ORDER BY stream_ordering LIMIT %s",
                (after, "%:" + server_name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_"), limit))
    return cur.fetchall()


def next_outbound(cur: Cursor, destination: str, max_pdus: int, max_edus: int) -> list[tuple[int, str | None, str | None]]:
    """The oldest queued (id, event_id, edu_json) of a destination: up to max_pdus PDUs
    and max_edus EDUs, in id order, stopping at the first item over either limit."""
    cur.execute("SELECT id, event_id, edu_json FROM federation_outbox WHERE destination = %s ORDER BY id LIMIT %s",
                (destination, max_pdus + max_edus))
    out, pdus, edus = [], 0, 0
    for row in cur.fetchall():
        if row[1] is not None:
            if pdus == max_pdus:
                break
            pdus += 1
        else:
            if edus == max_edus:
                break
            edus += 1
        out.append(row)
    return out


def delete_outbound(cur: Cursor, ids: list[int]) -> None:
    cur.execute("DELETE FROM federation_outbox WHERE id = ANY(%s)", (ids,))


def destinations_with_queue(cur: Cursor) -> list[str]:
    cur.execute("SELECT DISTINCT destination FROM federation_outbox")
    return [r[0] for r in cur.fetchall()]


def get_retry(cur: Cursor, destination: str) -> tuple[int, int, int] | None:
    cur.execute("SELECT retry_interval_ms, retry_at_ts, failing_since_ts FROM federation_destinations"
                " WHERE destination = %s", (destination,))
    row = cur.fetchone()
    return tuple(row) if row else None


def set_retry(cur: Cursor, destination: str, interval_ms: int, retry_at_ts: int, failing_since_ts: int) -> None:
    cur.execute("INSERT INTO federation_destinations (destination, retry_interval_ms, retry_at_ts, failing_since_ts)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT (destination) DO UPDATE SET"
                " retry_interval_ms = EXCLUDED.retry_interval_ms, retry_at_ts = EXCLUDED.retry_at_ts",
                (destination, interval_ms, retry_at_ts, failing_since_ts))


def clear_retry(cur: Cursor, destination: str) -> None:
    cur.execute("DELETE FROM federation_destinations WHERE destination = %s", (destination,))


def put_invite_state(cur: Cursor, room_id: str, user_id: str, state_json: str) -> None:
    cur.execute("INSERT INTO remote_invite_state (room_id, user_id, state_json) VALUES (%s, %s, %s)"
                " ON CONFLICT (room_id, user_id) DO UPDATE SET state_json = EXCLUDED.state_json",
                (room_id, user_id, state_json))


def get_invite_state(cur: Cursor, room_id: str, user_id: str) -> str | None:
    cur.execute("SELECT state_json FROM remote_invite_state WHERE room_id = %s AND user_id = %s",
                (room_id, user_id))
    row = cur.fetchone()
    return row[0] if row else None


def backward_extremities(cur: Cursor, room_id: str, max_depth: int, min_depth: int | None,
                         limit: int) -> list[str]:
    """Events cited as prev events by timeline events of the room (at depths between
    min_depth and max_depth) that we do not have in the timeline (missing, or held only
    as outliers): where backfill continues, deepest first."""
    cur.execute(
        "SELECT ee.prev_event_id, max(e.depth) AS d FROM events e JOIN event_edges ee USING (event_id)"
        " WHERE e.room_id = %s AND NOT e.outlier AND e.depth <= %s AND e.depth >= %s"
        " AND NOT EXISTS (SELECT 1 FROM events p WHERE p.event_id = ee.prev_event_id AND NOT p.outlier)"
        " AND NOT EXISTS (SELECT 1 FROM rejected_events r WHERE r.event_id = ee.prev_event_id)"
        " GROUP BY ee.prev_event_id ORDER BY d DESC, ee.prev_event_id LIMIT %s",
        (room_id, max_depth, min_depth if min_depth is not None else -1, limit))
    return [r[0] for r in cur.fetchall()]
