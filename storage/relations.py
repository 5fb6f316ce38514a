"""Event relationships: recorded inside the persist transaction (`record`), read for
/relations, /threads, bundled aggregations and the send-time checks."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from storage import events as events_store  # a module: storage/events.py imports this one
from storage.database import Cursor, execute_values

if TYPE_CHECKING:
    from storage.events import EventRow, StoredEvent

THREAD = "m.thread"
REPLACE = "m.replace"
REFERENCE = "m.reference"

_THREAD_LATEST = (
    "SELECT DISTINCT ON (relates_to_id) relates_to_id, room_id, event_id, depth, stream_ordering"
    " FROM event_relations WHERE {where} AND rel_type = 'm.thread'"
    " ORDER BY relates_to_id, depth DESC, stream_ordering DESC")


def record(cur: Cursor, rows: list["EventRow"]) -> None:
    """Part of persist_batch's transaction, after the events are written. A row's
    `extra["relation"]` is (parent_id, rel_type, key); the relation is kept only when the
    parent is an event of the same room. Redactions in the batch delete the redacted
    events' relations, so every stored relation is a live one."""
    rels = [(r.event_id, r.room_id, rel[0], rel[1], r.type, r.sender, rel[2], r.depth,
             r.stream_ordering, r.origin_server_ts)
            for r in rows if (rel := r.extra.get("relation"))]
    if rels:
        execute_values(
            cur,
            "INSERT INTO event_relations (event_id, room_id, relates_to_id, rel_type, event_type,"
            " sender, aggregation_key, depth, stream_ordering, origin_server_ts)"
            " SELECT v.event_id, v.room_id, v.parent, v.rel_type, v.event_type, v.sender,"
            " v.key::text, v.depth::bigint, v.so::bigint, v.ts::bigint"
            " FROM (VALUES %s) AS v(event_id, room_id, parent, rel_type, event_type, sender, key,"
            " depth, so, ts) JOIN events p ON p.event_id = v.parent AND p.room_id = v.room_id"
            " ON CONFLICT (event_id) DO NOTHING",
            rels,
        )
        threaded = [r[0] for r in rels if r[3] == THREAD]
        if threaded:
            cur.execute(
                "INSERT INTO threads (root_id, room_id, latest_event_id, latest_depth, latest_stream) "
                + _THREAD_LATEST.format(where="event_id = ANY(%s)")
                + " ON CONFLICT (root_id) DO UPDATE SET latest_event_id = EXCLUDED.latest_event_id,"
                " latest_depth = EXCLUDED.latest_depth, latest_stream = EXCLUDED.latest_stream"
                " WHERE (EXCLUDED.latest_depth, EXCLUDED.latest_stream)"
                " > (threads.latest_depth, threads.latest_stream)",
                (threaded,))
    drop(cur, [(r.redacts, r.room_id) for r in rows if r.apply_redaction and r.redacts])


def drop(cur: Cursor, targets: list[tuple[str, str]]) -> None:
    """(event_id, room_id) of events whose content is gone (redacted, or pruned when their
    sender was erased): their relations end, and threads they were the latest of move on."""
    if not targets:
        return
    cur.execute(
        "DELETE FROM event_relations r USING unnest(%s::text[], %s::text[]) AS v(target, room)"
        " WHERE r.event_id = v.target AND r.room_id = v.room RETURNING r.relates_to_id, r.rel_type",
        ([t for t, _ in targets], [room for _, room in targets]))
    roots = sorted({parent for parent, rel_type in cur.fetchall() if rel_type == THREAD})
    if roots:
        _refresh_threads(cur, roots)


def _refresh_threads(cur: Cursor, roots: list[str]) -> None:
    """After thread events were redacted: the latest remaining one, or no thread at all."""
    cur.execute(
        "UPDATE threads t SET latest_event_id = x.event_id, latest_depth = x.depth,"
        " latest_stream = x.stream_ordering FROM ("
        + _THREAD_LATEST.format(where="relates_to_id = ANY(%s)")
        + ") AS x WHERE t.root_id = x.relates_to_id", (roots,))
    cur.execute(
        "DELETE FROM threads t WHERE t.root_id = ANY(%s) AND NOT EXISTS (SELECT 1 FROM"
        " event_relations r WHERE r.relates_to_id = t.root_id AND r.rel_type = 'm.thread')",
        (roots,))


# ---- reads -------------------------------------------------------------------------

def has_annotated(cur: Cursor, parent_id: str, event_type: str, key: str, sender: str) -> bool:
    cur.execute(
        "SELECT 1 FROM event_relations WHERE relates_to_id = %s AND rel_type = 'm.annotation'"
        " AND sender = %s AND event_type = %s AND aggregation_key = %s LIMIT 1",
        (parent_id, sender, event_type, key))
    return cur.fetchone() is not None


def children(cur: Cursor, parent_id: str, rel_type: str | None, event_type: str | None,
             from_pos: tuple[int, int], direction: str, limit: int,
             to_pos: tuple[int, int] | None, levels: int) -> list["StoredEvent"]:
    """Events relating to `parent_id` (through up to `levels` relations, each of which
    must match the rel_type / event_type filters), strictly after (f) or before (b) a
    (depth, stream) position, in that direction, up to and including `to_pos`."""
    conds, params = "", []
    if rel_type is not None:
        conds += " AND r.rel_type = %s"
        params.append(rel_type)
    if event_type is not None:
        conds += " AND r.event_type = %s"
        params.append(event_type)
    cmp, order = (">", "ASC") if direction == "f" else ("<", "DESC")
    where = f"(r.depth, r.stream_ordering) {cmp} (%s, %s)"
    page_params: list = [from_pos[0], from_pos[1]]
    if to_pos is not None:
        # `to` includes the event its token names: a page's next_batch as `to` ends the
        # range with that page's last event (the spec's from/to example).
        where += f" AND (r.depth, r.stream_ordering) {'<=' if direction == 'f' else '>='} (%s, %s)"
        page_params += [to_pos[0], to_pos[1]]
    page_params.append(limit)
    if levels <= 1:
        sql = (f"SELECT {events_store.EVENT_COLUMNS} FROM event_relations r JOIN events e ON e.event_id = r.event_id"
               f" WHERE r.relates_to_id = %s{conds} AND {where}"
               f" ORDER BY r.depth {order}, r.stream_ordering {order} LIMIT %s")
        cur.execute(sql, [parent_id, *params, *page_params])
    else:
        sql = (
            "WITH RECURSIVE tree(event_id, n) AS ("
            f" SELECT r.event_id, 1 FROM event_relations r WHERE r.relates_to_id = %s{conds}"
            " UNION ALL SELECT r.event_id, tree.n + 1 FROM event_relations r"
            f" JOIN tree ON r.relates_to_id = tree.event_id WHERE tree.n < %s{conds})"
            f" SELECT {events_store.EVENT_COLUMNS} FROM tree JOIN event_relations r ON r.event_id = tree.event_id"
            f" JOIN events e ON e.event_id = r.event_id WHERE {where}"
            f" ORDER BY r.depth {order}, r.stream_ordering {order} LIMIT %s")
        cur.execute(sql, [parent_id, *params, levels, *params, *page_params])
    return [events_store.to_stored(r) for r in cur.fetchall()]


def thread_roots(cur: Cursor, room_id: str, before: tuple[int, int], limit: int,
                 participant: str | None) -> list[tuple[str, int, int]]:
    """(root_id, latest_depth, latest_stream) of the room's threads whose latest event
    is before `before`, latest activity first; with `participant`, only threads that
    user started or replied in."""
    sql = ("SELECT t.root_id, t.latest_depth, t.latest_stream FROM threads t"
           " WHERE t.room_id = %s AND (t.latest_depth, t.latest_stream) < (%s, %s)")
    params: list = [room_id, before[0], before[1]]
    if participant is not None:
        sql += (" AND (EXISTS (SELECT 1 FROM events root WHERE root.event_id = t.root_id"
                " AND root.sender = %s) OR EXISTS (SELECT 1 FROM event_relations r"
                " WHERE r.relates_to_id = t.root_id AND r.rel_type = 'm.thread' AND r.sender = %s))")
        params += [participant, participant]
    sql += " ORDER BY t.latest_depth DESC, t.latest_stream DESC LIMIT %s"
    params.append(limit)
    cur.execute(sql, params)
    return [tuple(r) for r in cur.fetchall()]


@dataclass
class AggregationRows:
    """What bundled aggregations need of the given parents, in one transaction."""
    edits: dict[str, list[str]] = field(default_factory=dict)        # candidates, newest first
    threads: dict[str, tuple[int, str, list[str]]] = field(default_factory=dict)  # count, latest, senders
    references: dict[str, list[str]] = field(default_factory=dict)   # in topological order


def aggregation_rows(cur: Cursor, parent_ids: list[str]) -> AggregationRows:
    out = AggregationRows()
    # Edit candidates: the sender and type pre-filter only narrows the rows; the
    # rules themselves are homeserver/relations.py:is_valid_edit.
    cur.execute(
        "SELECT r.relates_to_id, r.event_id FROM event_relations r"
        " JOIN events o ON o.event_id = r.relates_to_id"
        " WHERE r.relates_to_id = ANY(%s) AND r.rel_type = 'm.replace'"
        " AND r.sender = o.sender AND r.event_type = o.type"
        " ORDER BY r.relates_to_id, r.origin_server_ts DESC, r.event_id DESC", (parent_ids,))
    for parent, child in cur.fetchall():
        out.edits.setdefault(parent, []).append(child)
    cur.execute(
        "SELECT r.relates_to_id, count(*), t.latest_event_id, array_agg(DISTINCT r.sender)"
        " FROM event_relations r JOIN threads t ON t.root_id = r.relates_to_id"
        " WHERE r.relates_to_id = ANY(%s) AND r.rel_type = 'm.thread'"
        " GROUP BY r.relates_to_id, t.latest_event_id", (parent_ids,))
    for parent, count, latest, senders in cur.fetchall():
        out.threads[parent] = (count, latest, senders)
    cur.execute(
        "SELECT relates_to_id, event_id FROM event_relations"
        " WHERE relates_to_id = ANY(%s) AND rel_type = 'm.reference'"
        " ORDER BY relates_to_id, depth, stream_ordering", (parent_ids,))
    for parent, child in cur.fetchall():
        out.references.setdefault(parent, []).append(child)
    return out
