"""Writing batches of room events in one transaction, and reading events back."""
from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from storage import federation as federation_store
from storage import push as push_store
from storage import search as search_index
from storage import relations as relations_store
from storage.database import Cursor, execute_values


@dataclass
class NewStateGroup:
    id: int
    prev_group: int | None      # None: `entries` is a full snapshot
    chain_length: int
    entries: dict[tuple[str, str], str]  # (type, state_key) -> event_id


@dataclass
class RemoteRow:
    """How a remote event received into the timeline changes the room: unlike a local
    event (which replaces the extremities it cites and sets its own state key), state
    resolution decides. Written by storage/federation.py's part of persist_batch."""
    current_state_delta: dict[tuple[str, str], tuple[str, str | None] | None]  # key -> (event_id, membership) or None: remove
    extremities_removed: list[str]
    replaces_outlier: bool = False        # the event was held as an outlier until now
    extra_state_groups: list[NewStateGroup] = field(default_factory=list)
    room_state_group: tuple[int, int] | None = None  # (group, chain length) of the resolved current state


@dataclass
class EventRow:
    """Everything the persist transaction writes for one event; plain data only."""
    event_id: str
    room_id: str
    type: str
    state_key: str | None
    sender: str
    depth: int
    origin_server_ts: int
    received_ts: int
    json: str
    prev_events: list[str]
    auth_events: list[str]
    state_group: int                     # state after the event
    new_state_group: NewStateGroup | None
    redacts: str | None = None
    apply_redaction: bool = False        # the redaction passed checks: mark the target
    unsigned_json: str | None = None
    membership: str | None = None
    member_displayname: str | None = None
    member_avatar_url: str | None = None
    txn: tuple[str, str, str] | None = None  # (user_id, device_id, txn_id)
    new_room: tuple[str, str, str | None] | None = None  # (room_version, creator, tenant) for create
    stream_ordering: int = 0             # assigned by the persister
    extra: dict = field(default_factory=dict)
    remote: RemoteRow | None = None      # set for events received over federation


def max_stream_ordering(cur: Cursor) -> int:
    cur.execute("SELECT COALESCE(max(stream_ordering), 0) FROM events")
    return cur.fetchone()[0]


def max_state_group(cur: Cursor) -> int:
    cur.execute("SELECT COALESCE(max(id), 0) FROM state_groups")
    return cur.fetchone()[0]


def insert_memberships(cur: Cursor, rows: list[EventRow], ignore_existing: bool = False) -> None:
    """The membership history rows of `rows`' member events (a remote event already
    stored is skipped with `ignore_existing`)."""
    execute_values(
        cur,
        "INSERT INTO room_memberships (event_id, room_id, user_id, sender, membership,"
        " stream_ordering, displayname, avatar_url) VALUES %s"
        + (" ON CONFLICT DO NOTHING" if ignore_existing else ""),
        [(r.event_id, r.room_id, r.state_key, r.sender, r.membership, r.stream_ordering,
          r.member_displayname, r.member_avatar_url) for r in rows if r.membership],
    )


def persist_batch(cur: Cursor, rows: list[EventRow], now_ms: int) -> None:
    """One transaction for a whole batch: a handful of statements whatever its size."""
    remote = [r for r in rows if r.remote is not None]
    if remote:  # events received over federation (see storage/federation.py)
        federation_store.before_persist(cur, remote)
    execute_values(
        cur,
        "INSERT INTO rooms (room_id, room_version, creator, tenant_id, created_ts) VALUES %s"
        " ON CONFLICT (room_id) DO NOTHING",
        [(r.room_id, r.new_room[0], r.new_room[1], r.new_room[2], now_ms) for r in rows if r.new_room],
    )
    execute_values(
        cur,
        "INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender, depth,"
        " origin_server_ts, received_ts, state_group, redacts, unsigned_json, txn_device, txn_id,"
        " json) VALUES %s",
        [
            (r.stream_ordering, r.event_id, r.room_id, r.type, r.state_key, r.sender, r.depth,
             r.origin_server_ts, r.received_ts, r.state_group, r.redacts, r.unsigned_json,
             f"{r.txn[0]}|{r.txn[1]}" if r.txn else None, r.txn[2] if r.txn else None, r.json)
            for r in rows
        ],
    )
    execute_values(
        cur, "INSERT INTO event_edges (event_id, prev_event_id) VALUES %s ON CONFLICT DO NOTHING",
        [(r.event_id, p) for r in rows for p in r.prev_events],
    )
    execute_values(
        cur, "INSERT INTO event_auth (event_id, auth_id) VALUES %s ON CONFLICT DO NOTHING",
        [(r.event_id, a) for r in rows for a in r.auth_events],
    )
    groups = [r.new_state_group for r in rows if r.new_state_group]
    execute_values(
        cur, "INSERT INTO state_groups (id, room_id, prev_group, chain_length) VALUES %s",
        [(g.id, r.room_id, g.prev_group, g.chain_length)
         for r in rows if (g := r.new_state_group)],
    )
    execute_values(
        cur,
        "INSERT INTO state_group_entries (state_group, type, state_key, event_id) VALUES %s",
        [(g.id, t, sk, eid) for g in groups for (t, sk), eid in g.entries.items()],
    )
    # Current state, rows applied in order: a local event sets its own key, a remote one
    # carries the change state resolution made (which may also remove keys).
    current: dict[tuple[str, str, str], tuple | None] = {}
    for r in rows:
        if r.remote is not None:
            for (etype, skey), change in r.remote.current_state_delta.items():
                current[(r.room_id, etype, skey)] = (r.room_id, etype, skey, *change) if change else None
        elif r.state_key is not None:
            current[(r.room_id, r.type, r.state_key)] = (
                r.room_id, r.type, r.state_key, r.event_id, r.membership)
    execute_values(
        cur,
        "INSERT INTO current_state (room_id, type, state_key, event_id, membership) VALUES %s"
        " ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = EXCLUDED.event_id,"
        " membership = EXCLUDED.membership",
        [v for v in current.values() if v is not None],
    )
    execute_values(
        cur, "DELETE FROM current_state WHERE (room_id, type, state_key) IN (VALUES %s)",
        [k for k, v in current.items() if v is None],
    )
    insert_memberships(cur, rows)
    # Forward extremities: each new event replaces the ones it cites, applied in row order
    # (an event cited by a later one of the same batch never becomes an extremity).
    added: dict[tuple[str, str], None] = {}
    removed: set[tuple[str, str]] = set()
    for r in rows:
        for p in (r.remote.extremities_removed if r.remote is not None else r.prev_events):
            if (r.room_id, p) in added:
                del added[(r.room_id, p)]
            else:
                removed.add((r.room_id, p))
        added[(r.room_id, r.event_id)] = None
    execute_values(
        cur, "DELETE FROM forward_extremities WHERE (room_id, event_id) IN (VALUES %s)", list(removed),
    )
    execute_values(
        cur, "INSERT INTO forward_extremities (room_id, event_id) VALUES %s ON CONFLICT DO NOTHING",
        list(added),
    )
    execute_values(
        cur, "UPDATE events SET redacted_by = v.by FROM (VALUES %s) AS v(target, by, room)"
        " WHERE events.event_id = v.target AND events.room_id = v.room AND events.redacted_by IS NULL",
        [(r.redacts, r.event_id, r.room_id) for r in rows if r.apply_redaction and r.redacts],
    )
    execute_values(
        cur,
        "INSERT INTO event_txn_ids (user_id, device_id, txn_id, event_id, created_ts) VALUES %s",
        [(r.txn[0], r.txn[1], r.txn[2], r.event_id, now_ms) for r in rows if r.txn],
    )
    search_index.index_events(cur, rows)  # searchable text, edits and redactions
    if remote:
        federation_store.after_persist(cur, remote)
    relations_store.record(cur, rows)
    push_store.insert_push_actions(cur, rows)  # who was notified, for counts and pushers


# ---- reads -------------------------------------------------------------------------

EVENT_COLUMNS = "e.event_id, e.json, e.stream_ordering, e.redacted_by, e.unsigned_json, e.txn_device, e.txn_id"


@dataclass
class StoredEvent:
    """A row of the events table. The JSON is parsed on first use: callers that already
    hold the event in memory never pay for it."""
    event_id: str
    json_text: str
    stream_ordering: int
    redacted_by: str | None
    unsigned_json: str | None
    txn_device: str | None
    txn_id: str | None

    @property
    def pdu(self) -> dict:
        return orjson.loads(self.json_text)

    @property
    def unsigned(self) -> dict | None:
        return orjson.loads(self.unsigned_json) if self.unsigned_json else None


def to_stored(row: tuple) -> StoredEvent:
    return StoredEvent(*row)


def get_events(cur: Cursor, event_ids: list[str]) -> dict[str, StoredEvent]:
    if not event_ids:
        return {}
    cur.execute(f"SELECT {EVENT_COLUMNS} FROM events e WHERE e.event_id = ANY(%s)", (list(event_ids),))
    return {r[0]: to_stored(r) for r in cur.fetchall()}


def get_txn_event(cur: Cursor, user_id: str, device_id: str, txn_id: str) -> str | None:
    cur.execute(
        "SELECT event_id FROM event_txn_ids WHERE user_id = %s AND device_id = %s AND txn_id = %s",
        (user_id, device_id, txn_id),
    )
    row = cur.fetchone()
    return row[0] if row else None


# (types, not_types, senders, not_senders): exact-match lists, None for "no condition".
FilterLists = tuple[list[str] | None, list[str] | None, list[str] | None, list[str] | None]
NO_FILTER: FilterLists = (None, None, None, None)


def filter_sql(filters: FilterLists, params: list) -> str:
    """` AND ...` clauses on events `e` for a filter's lists, appending their parameters."""
    clauses = []
    for (column, negate), values in zip((("type", False), ("type", True), ("sender", False),
                                         ("sender", True)), filters):
        if values is not None:
            clauses.append(f" AND {'NOT ' if negate else ''}e.{column} = ANY(%s)")
            params.append(list(values))
    return "".join(clauses)


def paginate_room(cur: Cursor, room_id: str, from_pos: tuple[int, int], direction: str,
                  limit: int, to_pos: tuple[int, int] | None,
                  filters: FilterLists = NO_FILTER) -> list[StoredEvent]:
    """Events strictly after (f) or before (b) a (depth, stream) position, in that direction."""
    cmp, order = (">", "ASC") if direction == "f" else ("<", "DESC")
    sql = f"(e.depth, e.stream_ordering) {cmp} (%s, %s)"
    params: list = [room_id, from_pos[0], from_pos[1]]
    if to_pos is not None:
        back = "<=" if direction == "f" else ">"
        sql += f" AND (e.depth, e.stream_ordering) {back} (%s, %s)"
        params += [to_pos[0], to_pos[1]]
    sql += filter_sql(filters, params)
    params.append(limit)
    cur.execute(
        f"SELECT {EVENT_COLUMNS} FROM events e WHERE e.room_id = %s AND NOT e.outlier AND {sql}"
        f" ORDER BY e.depth {order}, e.stream_ordering {order} LIMIT %s",
        params,
    )
    return [to_stored(r) for r in cur.fetchall()]


def get_event_position(cur: Cursor, event_id: str) -> tuple[str, int, int] | None:
    cur.execute("SELECT room_id, depth, stream_ordering FROM events WHERE event_id = %s", (event_id,))
    row = cur.fetchone()
    return tuple(row) if row else None


def depth_at_stream(cur: Cursor, room_id: str, stream: int) -> int:
    cur.execute(
        "SELECT depth FROM events WHERE room_id = %s AND stream_ordering <= %s"
        " ORDER BY stream_ordering DESC LIMIT 1",
        (room_id, stream),
    )
    row = cur.fetchone()
    return row[0] if row else 0
