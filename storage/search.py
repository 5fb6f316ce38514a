"""The full-text search index (PostgreSQL tsvector + GIN, table event_search): kept up to
date inside the transaction that persists events (new messages, names, topics; edits;
redactions), rebuilt when the text search configuration changes, and queried by search."""
from __future__ import annotations

import logging
import re
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

import orjson
import psycopg2.errors
import psycopg2.extras

from storage.database import Cursor, execute_values

if TYPE_CHECKING:
    from storage.events import EventRow

logger = logging.getLogger(__name__)

# Searchable event types and the search API's name for their text.
KEY_OF_TYPE = {"m.room.message": "content.body", "m.room.name": "content.name",
               "m.room.topic": "content.topic"}
ALL_KEYS = tuple(KEY_OF_TYPE.values())
# The vectors are built with the configuration stored in search_settings (NULL before the
# first start-up build), so writers need not be told the configured language.
_LANGUAGE = "(SELECT COALESCE(language, 'simple')::regconfig FROM search_settings)"
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
REBUILD_CHUNK = 2000


# ---- text --------------------------------------------------------------------------

def clean(text: str) -> str:
    """Text a PostgreSQL text column can hold: control characters (NUL among them) carry
    no words, and lone surrogates are not UTF-8."""
    text = _CONTROL.sub(" ", text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def fold(text: str) -> str:
    """Case and accent folding, applied to indexed text and to search words alike, so
    "Résumé" finds "resume" and "STRASSE" finds "Straße", in any language."""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return unicodedata.normalize("NFC", stripped)


def searchable_text(event_type: str, content: dict[str, Any]) -> str | None:
    """The text the search API's key names for this event, or None."""
    if event_type == "m.room.message":
        body = content.get("body")
        return body if isinstance(body, str) else None
    if event_type == "m.room.name":
        name = content.get("name")
        return name if isinstance(name, str) else None
    if event_type == "m.room.topic":
        parts = [content["topic"]] if isinstance(content.get("topic"), str) else []
        block = content.get("m.topic")
        texts = block.get("m.text") if isinstance(block, dict) else None
        for rep in texts if isinstance(texts, list) else ():
            if isinstance(rep, dict) and isinstance(rep.get("body"), str) \
                    and rep.get("mimetype", "text/plain") == "text/plain" and rep["body"] not in parts:
                parts.append(rep["body"])
        return "\n".join(parts) if parts else None
    return None


def replace_target(content: dict[str, Any]) -> str | None:
    """The event an m.replace relation points at, if the content carries one."""
    rel = content.get("m.relates_to")
    if isinstance(rel, dict) and rel.get("rel_type") == "m.replace" and isinstance(rel.get("event_id"), str):
        return rel["event_id"]
    return None


# ---- maintenance in the persist transaction ----------------------------------------

@dataclass(slots=True)
class _Persisted:
    event_id: str
    room_id: str
    type: str
    state_key: str | None
    sender: str
    stream_ordering: int
    origin_server_ts: int
    json: str


def _searchable(type_: str, state_key: str | None) -> bool:
    if type_ == "m.room.message":
        return state_key is None
    return type_ in KEY_OF_TYPE and state_key == ""


def index_events(cur: Cursor, rows: Iterable["EventRow"]) -> None:
    """The persist hook: index new searchable events, apply edits, and drop redacted
    events, all in the caller's transaction."""
    rows = list(rows)
    _index(cur, [_Persisted(r.event_id, r.room_id, r.type, r.state_key, r.sender, r.stream_ordering,
                            r.origin_server_ts, r.json)
                 for r in rows if _searchable(r.type, r.state_key)])
    drop(cur, [(r.redacts, r.room_id) for r in rows if r.apply_redaction and r.redacts])


def _index(cur: Cursor, events: list[_Persisted]) -> None:
    if not events:
        return
    docs: list[tuple] = []
    edits: list[tuple[_Persisted, dict, str]] = []
    for ev in events:
        content = orjson.loads(ev.json).get("content")
        if not isinstance(content, dict):
            continue
        target = replace_target(content) if ev.type == "m.room.message" else None
        if target is not None and isinstance(content.get("m.new_content"), dict):
            edits.append((ev, content, target))
        else:
            docs.append(_doc(ev, content, target))
    valid_edits: list[tuple] = []
    if edits:
        originals = _edit_targets(cur, [t for _, _, t in edits])
        for ev, content, target in edits:
            original = originals.get(target)
            if original is None or not _valid_edit(ev, original):
                docs.append(_doc(ev, content, target))  # not an edit after all: a message
            elif not original["redacted"]:
                body = content["m.new_content"].get("body")
                valid_edits.append((ev.event_id, target, ev.room_id, ev.origin_server_ts,
                                    clean(body) if isinstance(body, str) else ""))
    docs = [d for d in docs if d is not None]
    execute_values(
        cur,
        "INSERT INTO event_search (event_id, room_id, sender, key, stream_ordering, has_url,"
        " replaces, text, vector) SELECT v.event_id, v.room_id, v.sender, v.key, v.so, v.has_url,"
        f" v.replaces, v.text, to_tsvector({_LANGUAGE}, v.folded)"
        " FROM (VALUES %s) AS v(event_id, room_id, sender, key, so, has_url, replaces, text, folded)",
        docs,
    )
    if valid_edits:
        execute_values(
            cur,
            "INSERT INTO event_search_edits (edit_id, original_id, room_id, origin_server_ts, text)"
            " VALUES %s ON CONFLICT DO NOTHING",
            valid_edits,
        )
        _refresh_texts(cur, list({e[1] for e in valid_edits}))


def _doc(ev: _Persisted, content: dict, replaces: str | None) -> tuple | None:
    text = searchable_text(ev.type, content)
    if text is None:
        return None
    text = clean(text)
    return (ev.event_id, ev.room_id, ev.sender, KEY_OF_TYPE[ev.type], ev.stream_ordering,
            "url" in content, replaces, text, fold(text))


def _edit_targets(cur: Cursor, event_ids: list[str]) -> dict[str, dict]:
    cur.execute("SELECT event_id, room_id, sender, type, state_key, redacted_by IS NOT NULL, json"
                " FROM events WHERE event_id = ANY(%s)", (list(set(event_ids)),))
    out = {}
    for event_id, room_id, sender, type_, state_key, redacted, js in cur.fetchall():
        content = orjson.loads(js).get("content")
        out[event_id] = {"room_id": room_id, "sender": sender, "type": type_,
                         "state_key": state_key, "redacted": redacted,
                         "is_edit": isinstance(content, dict) and replace_target(content) is not None}
    return out


def _valid_edit(edit: _Persisted, original: dict) -> bool:
    """The spec's validity rules for m.replace, as far as the index cares: same room, same
    sender, both m.room.message and not state, and the original is not itself an edit."""
    return (original["room_id"] == edit.room_id and original["sender"] == edit.sender
            and original["type"] == "m.room.message" and original["state_key"] is None
            and not original["is_edit"])


def _refresh_texts(cur: Cursor, original_ids: list[str]) -> None:
    """Set each original's indexed text to its latest valid edit, or its own body."""
    cur.execute(
        "SELECT DISTINCT ON (original_id) original_id, text FROM event_search_edits"
        " WHERE original_id = ANY(%s) ORDER BY original_id, origin_server_ts DESC, edit_id DESC",
        (original_ids,),
    )
    texts: dict[str, str] = dict(cur.fetchall())
    unedited = [eid for eid in original_ids if eid not in texts]
    if unedited:
        cur.execute("SELECT e.event_id, e.json FROM events e JOIN event_search s USING (event_id)"
                    " WHERE e.event_id = ANY(%s)", (unedited,))
        for event_id, js in cur.fetchall():
            content = orjson.loads(js).get("content")
            body = searchable_text("m.room.message", content if isinstance(content, dict) else {})
            texts[event_id] = clean(body or "")
    execute_values(
        cur,
        f"UPDATE event_search s SET text = v.text, vector = to_tsvector({_LANGUAGE}, v.folded)"
        " FROM (VALUES %s) AS v(event_id, text, folded)"
        " WHERE s.event_id = v.event_id AND s.text IS DISTINCT FROM v.text",
        [(eid, text, fold(text)) for eid, text in texts.items()],
    )


def drop(cur: Cursor, targets: list[tuple[str, str]]) -> None:
    """(event_id, room_id) of events whose content is gone (redacted, or pruned when their
    sender was erased) leave the index; a dropped edit hands its original back to the
    edit before it (or the original text)."""
    if not targets:
        return
    execute_values(cur, "DELETE FROM event_search WHERE (event_id, room_id) IN (VALUES %s)", targets)
    execute_values(cur, "DELETE FROM event_search_edits WHERE (original_id, room_id) IN (VALUES %s)",
                   targets)
    originals = psycopg2.extras.execute_values(
        cur, "DELETE FROM event_search_edits WHERE (edit_id, room_id) IN (VALUES %s) RETURNING original_id",
        targets, fetch=True)
    if originals:
        _refresh_texts(cur, list({r[0] for r in originals}))


# ---- the text search configuration ---------------------------------------------------

def use_language(cur: Cursor, language: str) -> int | None:
    """Make the index use `language` (a PostgreSQL text search configuration), rebuilding
    it from the events table when it was built with another one (or never). Returns the
    number of events a rebuild read, None when nothing had to change."""
    try:
        cur.execute("SELECT %s::regconfig", (language,))
    except psycopg2.errors.UndefinedObject:
        raise ValueError(f"search.language: PostgreSQL has no text search configuration {language!r}") from None
    cur.execute("SELECT language FROM search_settings FOR UPDATE")
    if cur.fetchone()[0] == language:
        return None
    cur.execute("UPDATE search_settings SET language = %s", (language,))
    cur.execute("TRUNCATE event_search, event_search_edits")
    done, after = 0, -1
    while True:
        cur.execute(
            "SELECT event_id, room_id, type, state_key, sender, stream_ordering, origin_server_ts, json"
            " FROM events WHERE type = ANY(%s) AND redacted_by IS NULL AND stream_ordering > %s"
            " ORDER BY stream_ordering LIMIT %s",
            (list(KEY_OF_TYPE), after, REBUILD_CHUNK),
        )
        chunk = [_Persisted(*r) for r in cur.fetchall()]
        if not chunk:
            return done
        _index(cur, [ev for ev in chunk if _searchable(ev.type, ev.state_key)])
        done += len(chunk)
        after = chunk[-1].stream_ordering
        if done % (REBUILD_CHUNK * 25) == 0:
            logger.info("search index: %d events read so far", done)


# ---- queries -------------------------------------------------------------------------

# (room_id, first, last): a stream range of a room the asker may see, ends included.
Window = tuple[str, int, int]


@dataclass
class Criteria:
    """What to match: a tsquery (built by homeserver/search_terms.py) over the visible
    windows, with the filter's conditions."""
    language: str
    tsquery: str
    rank_tsquery: str                # the positive part, for ranking
    windows: list[Window]
    keys: list[str]
    senders: list[str] | None = None
    not_senders: list[str] | None = None
    contains_url: bool | None = None


@dataclass
class Hit:
    event_id: str
    room_id: str
    sender: str
    stream_ordering: int
    rank: float
    text: str


_QUERY = "to_tsquery(%(language)s::regconfig, %(tsquery)s)"
# Normalization 1 divides by 1 + log(length): of two matches, the shorter message first.
_RANK = "ts_rank(s.vector, to_tsquery(%(language)s::regconfig, %(rank_tsquery)s), 1)"


def _from_where(c: Criteria, params: dict) -> str:
    params.update(language=c.language, tsquery=c.tsquery, rank_tsquery=c.rank_tsquery, keys=list(c.keys),
                  w_rooms=[w[0] for w in c.windows], w_lo=[w[1] for w in c.windows],
                  w_hi=[w[2] for w in c.windows])
    sql = (" FROM event_search s"
           " JOIN unnest(%(w_rooms)s::text[], %(w_lo)s::bigint[], %(w_hi)s::bigint[]) AS w(room_id, lo, hi)"
           "   ON s.room_id = w.room_id AND s.stream_ordering BETWEEN w.lo AND w.hi"
           f" WHERE s.vector @@ {_QUERY} AND s.key = ANY(%(keys)s)")
    if c.senders is not None:
        sql += " AND s.sender = ANY(%(senders)s)"
        params["senders"] = list(c.senders)
    if c.not_senders:
        sql += " AND NOT s.sender = ANY(%(not_senders)s)"
        params["not_senders"] = list(c.not_senders)
    if c.contains_url is not None:
        sql += " AND s.has_url = %(contains_url)s"
        params["contains_url"] = c.contains_url
    return sql


def usable_query(cur: Cursor, language: str, tsquery: str) -> bool:
    """False when the query matches nothing or could only be answered by reading every
    row (empty after normalization, e.g. only stop words, or nothing but negations).
    The functions below expect a usable query."""
    if not tsquery:
        return False
    cur.execute("SELECT querytree(to_tsquery(%s::regconfig, %s))", (language, tsquery))
    return cur.fetchone()[0] not in ("", "T")


def _after(order: str, cursor: tuple[float | None, int] | None, params: dict) -> str:
    if cursor is None:
        return ""
    params.update(c_rank=cursor[0], c_so=cursor[1])
    if order == "rank":
        return f" AND ({_RANK}, s.stream_ordering) < (%(c_rank)s::real, %(c_so)s)"
    return " AND s.stream_ordering < %(c_so)s"


def search_events(cur: Cursor, c: Criteria, order: str, cursor: tuple[float | None, int] | None,
                  limit: int) -> list[Hit]:
    """Up to `limit` matches after `cursor` (the previous page's last (rank, stream)), best
    (order "rank") or newest (order "recent") first; ties go to the newer event."""
    params: dict = {"limit": limit}
    sql = (f"SELECT s.event_id, s.room_id, s.sender, s.stream_ordering, {_RANK} AS rank, s.text"
           + _from_where(c, params) + _after(order, cursor, params))
    sql += " ORDER BY rank DESC, s.stream_ordering DESC" if order == "rank" else " ORDER BY s.stream_ordering DESC"
    cur.execute(sql + " LIMIT %(limit)s", params)
    return [Hit(*r) for r in cur.fetchall()]


def count_events(cur: Cursor, c: Criteria) -> int:
    params: dict = {}
    cur.execute("SELECT count(*)" + _from_where(c, params), params)
    return cur.fetchone()[0]


def any_after(cur: Cursor, c: Criteria, order: str, cursor: tuple[float | None, int]) -> bool:
    """Whether a match exists after `cursor`: stops at the first it finds."""
    params: dict = {}
    cur.execute("SELECT 1" + _from_where(c, params) + _after(order, cursor, params) + " LIMIT 1", params)
    return cur.fetchone() is not None


def matching_words(cur: Cursor, language: str, words: list[str], word_queries: list[str]) -> list[str]:
    """Those of `words` (as written in results) that one of the per-word queries matches,
    compared case- and accent-folded, as the index compares them."""
    if not words or not word_queries:
        return []
    cur.execute(
        "SELECT DISTINCT w.word FROM unnest(%s::text[], %s::text[]) AS w(word, folded),"
        " unnest(%s::text[]) AS t(q)"
        " WHERE to_tsvector(%s::regconfig, w.folded) @@ to_tsquery(%s::regconfig, t.q)",
        (words, [fold(w) for w in words], word_queries, language, language),
    )
    return sorted(r[0] for r in cur.fetchall())


# Reads behind the visibility windows: the user's membership history in the rooms of
# their tenant they have not forgotten, and those rooms' history-visibility changes.

def memberships_of(cur: Cursor, user_id: str, tenant: str | None,
                   rooms: list[str] | None) -> dict[str, list[tuple[int, str]]]:
    sql = ("SELECT m.room_id, m.stream_ordering, m.membership FROM room_memberships m"
           " JOIN rooms r ON r.room_id = m.room_id"
           " WHERE m.user_id = %s AND r.tenant_id IS NOT DISTINCT FROM %s"
           " AND NOT EXISTS (SELECT 1 FROM forgotten_rooms f WHERE f.user_id = m.user_id"
           "                 AND f.room_id = m.room_id)")
    params: list = [user_id, tenant]
    if rooms is not None:
        sql += " AND m.room_id = ANY(%s)"
        params.append(list(rooms))
    cur.execute(sql + " ORDER BY m.room_id, m.stream_ordering", params)
    out: dict[str, list[tuple[int, str]]] = {}
    for room_id, so, membership in cur.fetchall():
        out.setdefault(room_id, []).append((so, membership))
    return out


def visibility_changes(cur: Cursor, room_ids: list[str]) -> dict[str, list[tuple[int, str]]]:
    """(stream, event JSON) of each room's m.room.history_visibility events, ascending."""
    cur.execute(
        "SELECT room_id, stream_ordering, json FROM events WHERE room_id = ANY(%s)"
        " AND type = 'm.room.history_visibility' AND state_key = ''"
        " ORDER BY room_id, stream_ordering",
        (room_ids,),
    )
    out: dict[str, list[tuple[int, str]]] = {}
    for room_id, so, js in cur.fetchall():
        out.setdefault(room_id, []).append((so, js))
    return out


def sender_profiles(cur: Cursor, wanted: list[tuple[str, str, int]]) -> dict[tuple[str, str, int], tuple]:
    """(displayname, avatar_url) of each (room, user) as of stream position `so`: from the
    user's last membership event at or before it."""
    if not wanted:
        return {}
    cur.execute(
        "SELECT p.room_id, p.user_id, p.so, m.displayname, m.avatar_url"
        " FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS p(room_id, user_id, so)"
        " JOIN LATERAL (SELECT displayname, avatar_url FROM room_memberships r"
        "   WHERE r.user_id = p.user_id AND r.room_id = p.room_id AND r.stream_ordering <= p.so"
        "   ORDER BY r.stream_ordering DESC LIMIT 1) m ON TRUE",
        ([w[0] for w in wanted], [w[1] for w in wanted], [w[2] for w in wanted]),
    )
    return {(r[0], r[1], r[2]): (r[3], r[4]) for r in cur.fetchall()}
