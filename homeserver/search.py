"""Server-side search of room events (the `room_events` category of POST /search): which
rooms and stream ranges the asker may see, the query, its pagination tokens, groups'
continuation and highlights. The matching and ordering run in PostgreSQL
(storage/search.py); only a page of hits ever reaches Python."""
from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import orjson

from homeserver.errors import MatrixError
from homeserver.filtering import EventFilter
from homeserver.search_terms import parse_search_term, words_in
from homeserver.visibility import UserRoomHistory, visibility_of
from storage import search as search_store
from storage.search import KEY_OF_TYPE, Criteria, Hit

if TYPE_CHECKING:
    from homeserver.event import Event
    from homeserver.server import HomeServer

DEFAULT_LIMIT = 10
MAX_LIMIT = 100
ORDERS = ("rank", "recent")
GROUP_KEYS = ("room_id", "sender")
_TYPE_OF_KEY = {key: t for t, key in KEY_OF_TYPE.items()}

Scope = tuple[str, str] | None          # a group's (key, value) a token is confined to
Cursor = tuple[float | None, int]       # the last hit's (rank, stream_ordering)


@dataclass
class RoomEventsQuery:
    term: str
    keys: list[str]
    filter: EventFilter
    order_by: str = "rank"
    next_batch: str | None = None
    group_by: list[str] = field(default_factory=list)


@dataclass
class Page:
    hits: list[Hit]
    count: int
    highlights: list[str]
    next_batch: str | None
    # (group key, value) -> token for the groups on this page with more hits after it
    group_next: dict[tuple[str, str], str]
    histories: dict[str, UserRoomHistory]  # of the rooms searched, for context

    def may_see(self, event: Event) -> bool:
        """Whether the asker may see `event`, by their history of its room (bundled
        aggregations of results from several rooms leave out what it hides)."""
        history = self.histories.get(event.room_id)
        return history is not None and history.may_see(event)


# ---- tokens --------------------------------------------------------------------------

def encode_token(order: str, scope: Scope, hit: Hit) -> str:
    payload = [order, scope[0] if scope else None, scope[1] if scope else None,
               hit.rank if order == "rank" else None, hit.stream_ordering]
    return base64.urlsafe_b64encode(orjson.dumps(payload)).decode().rstrip("=")


def decode_token(token: str, order: str) -> tuple[Scope, Cursor]:
    bad = MatrixError(400, "M_INVALID_PARAM", "next_batch is not a token of this search")
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        raise bad from None
    if not (isinstance(payload, list) and len(payload) == 5 and payload[0] == order):
        raise bad
    _, key, value, rank, so = payload
    if key is None and value is None:
        scope = None
    elif key in GROUP_KEYS and isinstance(value, str):
        scope = (key, value)
    else:
        raise bad
    if not isinstance(so, int) or isinstance(so, bool) or not 0 <= so < 2**63:
        raise bad
    if order == "rank" and (not isinstance(rank, (int, float)) or isinstance(rank, bool)):
        raise bad
    return scope, (float(rank) if order == "rank" else None, so)


# ---- the search ----------------------------------------------------------------------

def _confine(values: list[str] | None, scope: Scope, key: str) -> list[str] | None:
    """A filter's list narrowed to a token's group."""
    if scope is None or scope[0] != key:
        return values
    return [scope[1]] if values is None or scope[1] in values else []


async def search_room_events(hs: "HomeServer", user_id: str, q: RoomEventsQuery) -> Page:
    scope, cursor = decode_token(q.next_batch, q.order_by) if q.next_batch else (None, None)
    f = q.filter
    limit = min(max(f.limit or DEFAULT_LIMIT, 1), MAX_LIMIT)
    rooms = _confine(f.rooms, scope, "room_id")
    senders = _confine(f.senders, scope, "sender")
    keys = [k for k in q.keys if f.allows_type(_TYPE_OF_KEY[k])]
    tenant = await hs.tenancy.tenant_of(user_id)
    parsed = parse_search_term(q.term)
    language = hs.config.search.language

    def txn(cur) -> Page:
        memberships = search_store.memberships_of(cur, user_id, tenant, rooms)
        for room_id in f.not_rooms:
            memberships.pop(room_id, None)
        changes = search_store.visibility_changes(cur, list(memberships))
        histories = {
            room_id: UserRoomHistory(m, [(so, visibility_of(js)) for so, js in changes.get(room_id, ())],
                                     user_id)
            for room_id, m in memberships.items()}
        windows = [(room_id, lo, hi) for room_id, h in histories.items() for lo, hi in h.visible_ranges()]
        empty = Page([], 0, [], None, {}, histories)
        if not windows or not keys or not search_store.usable_query(cur, language, parsed.tsquery):
            return empty
        criteria = Criteria(language, parsed.tsquery, parsed.rank_tsquery, windows, keys, senders,
                            f.not_senders or None, f.contains_url)
        hits = search_store.search_events(cur, criteria, q.order_by, cursor, limit + 1)
        following = hits[limit] if len(hits) > limit else None
        hits = hits[:limit]
        return Page(
            hits=hits,
            count=search_store.count_events(cur, criteria),
            highlights=search_store.matching_words(cur, language, words_in([h.text for h in hits]),
                                                   parsed.highlight_queries),
            next_batch=encode_token(q.order_by, scope, hits[-1]) if following else None,
            group_next=_group_continuations(cur, criteria, q, hits, following),
            histories=histories,
        )

    return await hs.db.run(txn)


def _group_continuations(cur, criteria: Criteria, q: RoomEventsQuery, hits: list[Hit],
                         following: Hit | None) -> dict[tuple[str, str], str]:
    """A token for each group on the page that has hits beyond its last one here."""
    out: dict[tuple[str, str], str] = {}
    if following is None:
        return out  # the search is exhausted, and so is every group
    for key in q.group_by:
        last: dict[str, Hit] = {}
        for hit in hits:
            last[getattr(hit, key)] = hit
        for value, hit in last.items():
            if getattr(following, key) == value:
                more = True
            else:
                narrowed = replace(criteria, **(
                    {"windows": [w for w in criteria.windows if w[0] == value]} if key == "room_id"
                    else {"senders": [value]}))
                more = search_store.any_after(cur, narrowed, q.order_by, (hit.rank, hit.stream_ordering))
            if more:
                out[(key, value)] = encode_token(q.order_by, (key, value), hit)
    return out
