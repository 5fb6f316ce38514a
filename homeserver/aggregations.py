"""Bundled aggregations (`unsigned.m.relations`) of served events: the latest valid edit
(`m.replace`, the whole edit event), the thread summary (`m.thread`: the latest thread
event with its own bundle, the count, whether the asker took part) and references
(`m.reference`: the referring event ids). Annotations are not bundled (spec v1.7+), nor
are state events, annotations and edits themselves. A redacted event keeps its thread
and references but loses its edit.

An event's aggregation is read from Postgres once and kept in memory until the persist
path writes or redacts a relation to it. Every event persisted while the server runs
starts out known to have none, so serving events without relations costs a dict look-up
each; older events are looked up in bulk, one query round per call. A bundle is kept as a
dict and as JSON bytes (for /sync's shared fragments) in at most two variants, with and
without the asker's participation in the thread: that choice is all the per-recipient
work, but for an asker who may not see a bundled event (one who left the room before it),
whose bundle is built for them alone without it."""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable

import orjson
from twisted.internet import defer

from homeserver.event import Event
from homeserver.relations import ANNOTATION, REPLACE, event_relation, is_valid_edit, relation_of
from homeserver.serialize import bundled_form
from storage import relations as relations_store

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)
CAPACITY = 100_000   # events whose aggregation (or lack of one) is remembered
_UNKNOWN = object()


@dataclass(frozen=True)
class Bundle:
    value: dict[str, Any]   # shared: callers must not mutate it
    json: bytes | None      # None when orjson cannot encode it (lone surrogates)


@dataclass(eq=False)
class Aggregation:
    """The recipient-independent part of one event's aggregations."""
    edit: Event | None = None
    thread_count: int = 0
    thread_latest: Event | None = None
    thread_senders: frozenset[str] = frozenset()
    references: tuple[str, ...] = ()
    # (participated, redacted) -> (the latest thread event's Aggregation it was built
    # with, the bundle): rebuilt when that one changed (an edit of the latest event).
    forms: dict[tuple[bool, bool], tuple[Any, Bundle | None]] = field(default_factory=dict)


def _may_have_bundle(event: Event) -> bool:
    if event.is_state():
        return False
    rel = event_relation(event)
    return rel is None or rel.rel_type not in (ANNOTATION, REPLACE)


class Aggregations:
    def __init__(self, hs: "HomeServer") -> None:
        self.hs = hs
        self._known: OrderedDict[str, Aggregation | None] = OrderedDict()
        # Invalidations while a load is in flight: its stale answer must not be kept.
        self._generation = 0
        self._cleared_at = 0
        self._loads_in_flight = 0
        self._touched: dict[str, int] = {}
        hs.persister.add_listener(self._on_persisted)

    async def bundle(self, events: Iterable[Event], user_id: str | None,
                     may_see: Callable[[Event], bool] | None = None) -> dict[str, Bundle]:
        """event_id -> bundled aggregations, for those of `events` that have any.
        `may_see`: the asker's history visibility; bundled events it hides (an edit or a
        thread reply sent after the asker left) are left out with their aggregation."""
        candidates = [e for e in events if _may_have_bundle(e)]
        found = await self._aggregations([e.event_id for e in candidates])
        if not found:
            return {}
        latest_ids = [a.thread_latest.event_id for a in found.values() if a.thread_latest is not None]
        latest_aggs = await self._aggregations(latest_ids) if latest_ids else {}
        out: dict[str, Bundle] = {}
        for event in candidates:
            agg = found.get(event.event_id)
            if agg is None:
                continue
            latest_agg = latest_aggs.get(agg.thread_latest.event_id) if agg.thread_latest else None
            if may_see is not None and _hides_some(agg, latest_agg, may_see):
                # Built for this asker alone, without what they may not see.
                bundle = _encoded(self._value(event, agg, _participated(event, agg, user_id),
                                              latest_agg, may_see))
            else:
                bundle = self._bundle_of(event, agg, user_id, latest_agg)
            if bundle is not None:
                out[event.event_id] = bundle
        return out

    # ---- building bundles ---------------------------------------------------------

    def _bundle_of(self, event: Event, agg: Aggregation, user_id: str | None,
                   latest_agg: Aggregation | None) -> Bundle | None:
        participated = _participated(event, agg, user_id)
        key = (participated, bool(event.internal.get("redacted_by")))
        cached = agg.forms.get(key)
        if cached is not None and cached[0] is latest_agg:
            return cached[1]
        bundle = _encoded(self._value(event, agg, participated, latest_agg, None))
        agg.forms[key] = (latest_agg, bundle)
        return bundle

    def _value(self, event: Event, agg: Aggregation, participated: bool,
               latest_agg: Aggregation | None, may_see: Callable[[Event], bool] | None) -> dict[str, Any]:
        value: dict[str, Any] = {}
        edit = agg.edit
        if edit is not None and not event.internal.get("redacted_by") and (may_see is None or may_see(edit)):
            value["m.replace"] = bundled_form(edit)
        latest = agg.thread_latest
        if latest is not None and event_relation(event) is None and (may_see is None or may_see(latest)):
            # The latest event is itself a relation, so it has no thread of its own.
            own = self._value(latest, latest_agg, False, None, may_see) if latest_agg is not None else None
            value["m.thread"] = {"latest_event": bundled_form(latest, own or None),
                                 "count": agg.thread_count,
                                 "current_user_participated": participated}
        if agg.references:
            value["m.reference"] = {"chunk": [{"event_id": r} for r in agg.references]}
        return value

    # ---- the cache ----------------------------------------------------------------

    async def _aggregations(self, event_ids: list[str]) -> dict[str, Aggregation]:
        found: dict[str, Aggregation] = {}
        unknown = []
        for eid in event_ids:
            agg = self._known.get(eid, _UNKNOWN)
            if agg is _UNKNOWN:
                unknown.append(eid)
            elif agg is not None:
                found[eid] = agg  # type: ignore[assignment]
        if unknown:
            found.update(await self._load(list(dict.fromkeys(unknown))))
        return found

    async def _load(self, event_ids: list[str]) -> dict[str, Aggregation]:
        started = self._generation
        self._loads_in_flight += 1
        try:
            rows = await self.hs.db.run(relations_store.aggregation_rows, event_ids)
            needed = {c for cs in rows.edits.values() for c in cs} | set(rows.edits)
            needed |= {latest for _, latest, _ in rows.threads.values()}
            events = await self.hs.event_cache.get_many(list(needed)) if needed else {}
        finally:
            self._loads_in_flight -= 1
        out: dict[str, Aggregation] = {}
        for eid in event_ids:
            agg = _aggregation(eid, rows, events)
            if agg is not None:
                out[eid] = agg
            if self._cleared_at <= started and self._touched.get(eid, started) <= started:
                self._remember(eid, agg)
        if not self._loads_in_flight:
            self._touched.clear()
        return out

    def _remember(self, event_id: str, agg: Aggregation | None) -> None:
        self._known[event_id] = agg
        while len(self._known) > CAPACITY:
            self._known.popitem(last=False)

    def _invalidate(self, event_id: str) -> None:
        self._generation += 1
        self._known.pop(event_id, None)
        if self._loads_in_flight:
            self._touched[event_id] = self._generation

    def forget_all(self) -> None:
        """Drop every cached aggregation (after an admin purged or pruned events)."""
        self._generation += 1
        self._cleared_at = self._generation
        self._known.clear()

    def _on_persisted(self, events: list[Event]) -> None:
        """Written through on the reactor before the sync engine wakes anyone."""
        for ev in events:
            rel = relation_of(ev.content)
            if rel is not None:
                self._invalidate(rel.parent_id)
            target = ev.redacts
            if target:
                self._invalidate(target)  # a redacted original loses its edit
                redacted = self.hs.event_cache.peek(target)
                if redacted is not None:
                    self._forget_parent_of(redacted)
                else:
                    # Not in memory: the redaction check found no such event (nothing to
                    # forget), or it has been evicted since; look it up to be sure.
                    defer.ensureDeferred(self._forget_parent_of_stored(target))
            if ev.event_id not in self._known:
                self._remember(ev.event_id, None)  # nothing relates to a brand-new event

    def _forget_parent_of(self, redacted: Event) -> None:
        rel = relation_of(redacted.content)  # the original content: the relation it had
        if rel is not None:
            self._invalidate(rel.parent_id)

    async def _forget_parent_of_stored(self, event_id: str) -> None:
        try:
            redacted = await self.hs.event_cache.get(event_id)
        except Exception:
            logger.exception("looking up redacted event %s failed; forgetting every aggregation", event_id)
            self.forget_all()
            return
        if redacted is not None:
            self._forget_parent_of(redacted)


def _participated(event: Event, agg: Aggregation, user_id: str | None) -> bool:
    in_thread = agg.thread_latest is not None and event_relation(event) is None
    return in_thread and (user_id == event.sender or user_id in agg.thread_senders)


def _hides_some(agg: Aggregation, latest_agg: Aggregation | None, may_see: Callable[[Event], bool]) -> bool:
    nested = (agg.edit, agg.thread_latest, latest_agg.edit if latest_agg is not None else None)
    return any(e is not None and not may_see(e) for e in nested)


def _encoded(value: dict[str, Any]) -> Bundle | None:
    if not value:
        return None
    try:
        return Bundle(value, orjson.dumps(value))
    except TypeError:  # not representable by orjson (lone surrogates): dict form only
        return Bundle(value, None)


def _aggregation(event_id: str, rows: relations_store.AggregationRows,
                 events: dict[str, Event]) -> Aggregation | None:
    original = events.get(event_id)
    edit = None
    if original is not None:
        edit = next((events[c] for c in rows.edits.get(event_id, ())
                     if c in events and is_valid_edit(original, events[c])), None)
    thread = rows.threads.get(event_id)
    latest = events.get(thread[1]) if thread else None
    references = tuple(rows.references.get(event_id, ()))
    if edit is None and latest is None and not references:
        return None
    return Aggregation(edit=edit, thread_count=thread[0] if latest is not None else 0,
                       thread_latest=latest,
                       thread_senders=frozenset(thread[2]) if latest is not None else frozenset(),
                       references=references)
