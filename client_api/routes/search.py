"""POST /search: server-side search of room events (docs/search.md)."""
from __future__ import annotations

from typing import Any

from client_api.http import Req, Router
from client_api.routes.room_events import serialize_for, state_for_reader
from homeserver.errors import MatrixError
from homeserver.event import Event
from homeserver.filtering import EventFilter
from homeserver.pagination import topo_token
from homeserver.search import GROUP_KEYS, ORDERS, Page, RoomEventsQuery, search_room_events
from homeserver.search_terms import MAX_TERM_CHARS
from storage import events as events_store
from storage import search as search_store
from storage.search import ALL_KEYS

DEFAULT_CONTEXT = 5
MAX_CONTEXT = 20


def _bad_json(msg: str) -> MatrixError:
    return MatrixError(400, "M_BAD_JSON", msg)


def _invalid(msg: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_PARAM", msg)


def _object(obj: dict, key: str, where: str) -> dict:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad_json(f"{where}.{key} must be an object")
    return value


def _bool(obj: dict, key: str, where: str) -> bool:
    value = obj.get(key, False)
    if not isinstance(value, bool):
        raise _bad_json(f"{where}.{key} must be true or false")
    return value


def _context_limit(ctx: dict, key: str) -> int:
    value = ctx.get(key, DEFAULT_CONTEXT)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _bad_json(f"event_context.{key} must be an integer")
    if value < 0:
        raise _invalid(f"event_context.{key} must not be negative")
    return min(value, MAX_CONTEXT)


def _parse_criteria(crit: dict, next_batch: str | None) -> RoomEventsQuery:
    where = "search_categories.room_events"
    term = crit.get("search_term")
    if not isinstance(term, str):
        raise _bad_json(f"{where}.search_term must be a string")
    if len(term) > MAX_TERM_CHARS:
        raise _invalid(f"search_term is longer than {MAX_TERM_CHARS} characters")
    keys = crit.get("keys", list(ALL_KEYS))
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise _bad_json(f"{where}.keys must be a list of strings")
    if unknown := [k for k in keys if k not in ALL_KEYS]:
        raise _invalid(f"keys may only be {', '.join(ALL_KEYS)}; not {unknown[0]}")
    order_by = crit.get("order_by", "rank")
    if order_by not in ORDERS:
        raise _invalid("order_by must be 'rank' or 'recent'")
    group_list = _object(crit, "groupings", where).get("group_by", [])
    if not isinstance(group_list, list):
        raise _bad_json("groupings.group_by must be a list")
    group_by = []
    for group in group_list:
        if not isinstance(group, dict):
            raise _bad_json("groupings.group_by must be a list of objects")
        if group.get("key") not in GROUP_KEYS:
            raise _invalid("groupings.group_by keys may only be room_id or sender")
        if group["key"] not in group_by:
            group_by.append(group["key"])
    return RoomEventsQuery(term=term, keys=list(dict.fromkeys(keys)),
                           filter=EventFilter.parse(crit.get("filter"), "filter"),
                           order_by=order_by, next_batch=next_batch, group_by=group_by)


async def search(req: Req):
    body = req.json()
    categories = body.get("search_categories")
    if not isinstance(categories, dict):
        raise _bad_json("search_categories must be an object")
    crit = categories.get("room_events")
    if crit is None:
        return {"search_categories": {}}
    if not isinstance(crit, dict):
        raise _bad_json("search_categories.room_events must be an object")
    query = _parse_criteria(crit, req.query("next_batch"))
    ctx = _object(crit, "event_context", "search_categories.room_events")
    context_limits = (_context_limit(ctx, "before_limit"), _context_limit(ctx, "after_limit"),
                      _bool(ctx, "include_profile", "event_context")) if "event_context" in crit else None
    include_state = _bool(crit, "include_state", "search_categories.room_events")

    page = await search_room_events(req.hs, req.user_id, query)
    found = await req.hs.event_cache.get_many([h.event_id for h in page.hits])
    hits = [h for h in page.hits if h.event_id in found]
    events = [found[h.event_id] for h in hits]
    serialized = await serialize_for(req, events, page)  # bundles: without what the asker may not see
    results: list[dict[str, Any]] = [{"rank": h.rank, "result": ev} for h, ev in zip(hits, serialized)]
    if context_limits is not None:
        contexts = await _contexts(req, page, events, *context_limits, query.filter)
        for result, context in zip(results, contexts):
            result["context"] = context
    out: dict[str, Any] = {"results": results, "count": page.count, "highlights": page.highlights}
    if page.next_batch:
        out["next_batch"] = page.next_batch
    if query.group_by:
        out["groups"] = _groups(page, query.group_by)
    if include_state:
        out["state"] = {room_id: await serialize_for(req, list((await state_for_reader(req, room_id)).values()), page)
                        for room_id in dict.fromkeys(h.room_id for h in hits)}
    return {"search_categories": {"room_events": out}}


def _groups(page: Page, group_by: list[str]) -> dict[str, dict[str, dict]]:
    """Each group's hits on this page; `order` is the place (from 1) of its first hit."""
    groups: dict[str, dict[str, dict]] = {}
    for key in group_by:
        by_value = groups.setdefault(key, {})
        for hit in page.hits:
            value = getattr(hit, key)
            group = by_value.setdefault(value, {"results": [], "order": len(by_value) + 1})
            group["results"].append(hit.event_id)
        for value, group in by_value.items():
            token = page.group_next.get((key, value))
            if token:
                group["next_batch"] = token
    return groups


async def _contexts(req: Req, page: Page, events: list[Event], before_n: int, after_n: int,
                    include_profile: bool, f: EventFilter) -> list[dict[str, Any]]:
    """The events around each hit in its room, as /context gives them (only what the asker
    may see, the filter's types and senders applied), and the senders' profiles then."""
    filters = f.sql_lists()

    def txn(cur):
        return [(events_store.paginate_room(cur, ev.room_id, (ev.depth, ev.stream_ordering), "b",
                                            before_n, None, filters) if before_n else [],
                 events_store.paginate_room(cur, ev.room_id, (ev.depth, ev.stream_ordering), "f",
                                            after_n, None, filters) if after_n else [])
                for ev in events]

    rows = await req.hs.db.run(txn) if before_n or after_n else [([], [])] * len(events)
    around: list[tuple[list[Event], list[Event]]] = []
    for ev, (before_rows, after_rows) in zip(events, rows):
        hist, version = page.histories[ev.room_id], ev.room_version.identifier

        def shown(stored) -> list[Event]:  # wildcard types are matched here, as in /messages
            return [e for e in req.hs.event_cache.from_stored_list(stored, version) if hist.may_see(e)
                    and (f.passes_all or f.allows(e.type, e.sender, e.content))]
        around.append((shown(before_rows), shown(after_rows)))
    profiles: dict = {}
    if include_profile:
        wanted = {(ev.room_id, e.sender, ev.stream_ordering)
                  for ev, (before, after) in zip(events, around) for e in [ev, *before, *after]}
        profiles = await req.hs.db.run(search_store.sender_profiles, list(wanted))
    out = []
    for ev, (before, after) in zip(events, around):
        first = before[-1] if before else ev
        last = after[-1] if after else ev
        context: dict[str, Any] = {
            "events_before": await serialize_for(req, before, page),
            "events_after": await serialize_for(req, after, page),
            "start": topo_token((first.depth, first.stream_ordering)),
            "end": topo_token((last.depth, last.stream_ordering)),
        }
        if include_profile:
            context["profile_info"] = _profile_info(profiles, ev, [ev, *before, *after])
        out.append(context)
    return out


def _profile_info(profiles: dict, hit: Event, events: list[Event]) -> dict[str, dict]:
    info = {}
    for sender in dict.fromkeys(e.sender for e in events):
        name, avatar = profiles.get((hit.room_id, sender, hit.stream_ordering), (None, None))
        info[sender] = {k: v for k, v in (("displayname", name), ("avatar_url", avatar)) if v is not None}
    return info


def register(router: Router) -> None:
    router.client("POST", "/search", search)
