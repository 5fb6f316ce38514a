"""Receiving room events from other servers, in the spec's order of checks:

1. shape, room version, event id (dropped if malformed);
2. the signatures of the servers that must have signed it (dropped if missing/bad);
3. the content hash (a mismatch keeps only the redacted form);
4. the auth events: fetched (`/event_auth`) when missing, and the event checked against
   them (rejected if it fails, or if any of them was rejected);
5. the state before the event: the state after its prev events, resolved when there are
   several; prev events we lack are fetched (`get_missing_events`), and where a gap
   remains the state at the missing event is fetched (`/state_ids`, `/event`, `/state`).
   The event is checked against that state (rejected if it fails);
6. the current state of the room: an event that fails against it is soft-failed (stored
   as an outlier, not shown to clients, not built upon).

Accepted events take the same persist path as local ones (the persister), with state
groups, forward extremities and current state computed here by state resolution; the
room's in-memory head is updated in the same synchronous step that queues the event.
Outliers (auth chains, fetched state), rejected events and backfilled history are
written directly (storage/federation.py). One room's events are handled one at a time."""
from __future__ import annotations

import json
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Iterable

from twisted.internet import defer

from homeserver import auth_rules
from homeserver.event import Event, StateKey
from homeserver.event_creation import event_row, now_ms
from homeserver.federation.acl import server_allowed
from homeserver.federation.client import FederationError, path
from homeserver.federation.exposure import server_of, servers_in_room
from homeserver.federation.keyring import KeyLookupError
from homeserver.federation.pdu_format import PduFormatError, parse_pdu
from homeserver.federation.room_state import StateAccess, StateMap
from homeserver.room_heads import RoomHead
from homeserver.room_versions import RoomVersion
from storage import federation as store
from storage.events import EventRow, NewStateGroup, RemoteRow

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)
F1 = "/_matrix/federation/v1"
STATUS_CACHE = 50_000
MISSING_EVENTS_ROUNDS = 5
MISSING_EVENTS_LIMIT = 20
FETCH_ONE_BY_ONE = 50  # beyond this many missing state events, /state fetches them at once


class PduError(Exception):
    """The PDU was not accepted; the message goes into the /send answer."""


def auth_failure(event: Event, state: dict[StateKey, Event]) -> str | None:
    try:
        auth_rules.check_auth(event, state)
    except auth_rules.AuthError as e:
        return str(e)
    return None


def topological(events: Iterable[Event]) -> list[Event]:
    """Auth events before the events citing them (within the batch), then by depth."""
    by_id = {e.event_id: e for e in events}
    done: set[str] = set()
    out: list[Event] = []
    for start in sorted(by_id.values(), key=lambda e: (e.depth, e.event_id)):
        stack = [(start, False)]
        while stack:
            ev, expanded = stack.pop()
            if ev.event_id in done:
                continue
            if expanded:
                done.add(ev.event_id)
                out.append(ev)
                continue
            stack.append((ev, True))
            for parent in ev.auth_parent_ids:
                if parent in by_id and parent not in done:
                    stack.append((by_id[parent], False))
    return out


class InboundEvents:
    def __init__(self, hs: "HomeServer", federation) -> None:
        self.hs = hs
        self.federation = federation
        self.state = StateAccess(hs)
        self._locks: dict[str, defer.DeferredLock] = {}
        # Statuses that cannot change any more (events in the timeline, with their state
        # group), so most PDUs need no query for their prev and auth events.
        self._timeline: OrderedDict[str, int] = OrderedDict()

    async def statuses(self, event_ids: Iterable[str]) -> dict[str, tuple[str, int]]:
        """event_id -> ("timeline" | "outlier" | "rejected", state group) of stored events."""
        ids = list(dict.fromkeys(event_ids))
        out = {eid: ("timeline", self._timeline[eid]) for eid in ids if eid in self._timeline}
        missing = [eid for eid in ids if eid not in out]
        if missing:
            found = await self.hs.db.run(store.event_statuses, missing)
            for eid, status in found.items():
                if status[0] == "timeline":
                    self._remember_timeline(eid, status[1])
            out.update(found)
        return out

    def _remember_timeline(self, event_id: str, group: int) -> None:
        self._timeline[event_id] = group
        if len(self._timeline) > STATUS_CACHE:
            self._timeline.popitem(last=False)

    def lock(self, room_id: str) -> defer.DeferredLock:
        lock = self._locks.get(room_id)
        if lock is None:
            lock = self._locks[room_id] = defer.DeferredLock()
        return lock

    async def _head(self, room_id: str) -> RoomHead:
        head = await self.hs.room_heads.get(room_id)
        if head is None:
            raise PduError(f"this server is not in {room_id}")
        return head

    # ---- entry point ---------------------------------------------------------------

    def parse(self, head: RoomHead, raw: Any) -> Event:
        try:
            event, _hash_ok = parse_pdu(raw, head.room_version)
        except PduFormatError as e:
            raise PduError(f"malformed PDU: {e}") from None
        if event.room_id != head.room_id:
            raise PduError("the PDU is not of the room it claims")
        return event

    async def receive(self, origin: str, room_id: str, event: Event) -> None:
        """One PDU of a transaction (the caller holds the room's lock)."""
        head = await self._head(room_id)
        rv = head.room_version
        status = (await self.statuses([event.event_id])).get(event.event_id)
        if status is not None and status[0] != "outlier":
            return  # already have it
        await self.verify_signatures(event)
        acl = self.acl_of(head)
        if not server_allowed(server_of(event.sender), acl) or not server_allowed(origin, acl):
            raise PduError("the sending server is denied by the room's server ACL")
        await self._fetch_missing_prevs(origin, room_id, rv, event)
        await self.accept(origin, room_id, rv, event, replaces_outlier=status is not None)

    def acl_of(self, head: RoomHead) -> dict | None:
        ev = head.state.get(("m.room.server_acl", ""))
        return ev.content if ev is not None else None

    async def verify_signatures(self, event: Event) -> None:
        try:
            await self.federation.keyring.verify_event(event.pdu, event.room_version)
        except KeyLookupError as e:
            raise PduError(f"bad signature: {e}") from None

    # ---- fetching from other servers ------------------------------------------------

    def _sources(self, origin: str, room_id: str) -> list[str]:
        """Servers to ask for a room's events: the origin, then others in the room."""
        head = self.hs.room_heads.peek(room_id)
        others = sorted(servers_in_room(head) - {origin, self.hs.server_name}) if head else []
        return [origin, *others]

    async def _ask(self, servers: list[str], what: str, path_: str, query: dict | None = None) -> Any:
        """GET `path_` from the first of `servers` that answers."""
        last: Exception | None = None
        for server in servers:
            if not self.federation.client.may_contact(server):
                continue
            try:
                return await self.federation.client.get(server, path_, query)
            except FederationError as e:
                last = e
        raise PduError(f"could not get {what} from any server: {last}")

    def _parse_all(self, raws: Any, rv: RoomVersion, room_id: str) -> list[Event]:
        out = []
        for raw in raws if isinstance(raws, list) else []:
            try:
                ev, _ = parse_pdu(raw, rv)
            except PduFormatError:
                continue
            if ev.room_id == room_id:
                out.append(ev)
        return out

    async def fetch_event(self, servers: list[str], room_id: str, rv: RoomVersion, event_id: str) -> Event:
        answer = await self._ask(servers, f"the event {event_id}", path(F1 + "/event/%s", event_id))
        events = [e for e in self._parse_all(answer.get("pdus") if isinstance(answer, dict) else None, rv, room_id)
                  if e.event_id == event_id]
        if not events:
            raise PduError(f"{event_id} could not be fetched")
        return events[0]

    # ---- outliers -----------------------------------------------------------------

    async def store_outliers(self, room_id: str, rv: RoomVersion, events: list[Event]) -> dict[str, Event]:
        """Check (signatures, auth against their own auth events) and store events that
        are not part of the timeline. Returns the accepted ones by id; rejected ones are
        stored as such; unverifiable ones are dropped."""
        candidates = {e.event_id: e for e in events}
        statuses = await self.statuses(list(candidates))
        ordered = [e for e in topological(candidates.values()) if e.event_id not in statuses]
        known = await self.state.events([a for e in ordered for a in e.auth_parent_ids
                                         if a not in candidates], rv)
        accepted: dict[str, Event] = {}
        rows: list[EventRow] = []
        rejected_rows: list[tuple] = []
        for ev in ordered:
            try:
                await self.verify_signatures(ev)
            except PduError as e:
                logger.info("dropping %s: %s", ev.event_id, e)
                continue
            auth = {a: accepted.get(a) or known.get(a) for a in ev.auth_parent_ids}
            if any(a is None for a in auth.values()):
                logger.info("dropping %s: its auth events are unavailable", ev.event_id)
                continue
            reason = self._auth_events_failure(ev, auth)  # type: ignore[arg-type]
            if reason is not None:
                self.state.remember_rejected(ev)
                known[ev.event_id] = ev
                rejected_rows.append((ev.event_id, room_id, _json(ev), reason, 0, now_ms()))
                continue
            ev.internal["redacted_by"] = None
            accepted[ev.event_id] = ev
            rows.append(event_row(ev, 0, None, None, apply_redaction=False))

        def txn(cur):
            store.persist_historic(cur, rows, True, now_ms())
            store.store_rejected(cur, rejected_rows)
        await self.hs.db.run(txn)
        for ev in accepted.values():
            self.hs.event_cache.put(ev)
        return accepted

    def _auth_events_failure(self, event: Event, auth: dict[str, Event]) -> str | None:
        """Why `event` fails against its own auth events (all of them given), or None."""
        if any(a.rejected for a in auth.values()):
            return "an auth event was rejected"
        try:
            auth_rules.check_auth_events_list(event, [auth[a] for a in event.auth_event_ids])
        except auth_rules.AuthError as e:
            return str(e)
        return auth_failure(event, {a.key: a for a in auth.values() if a.is_state()})

    async def _ensure_auth_events(self, origin: str, room_id: str, rv: RoomVersion, event: Event) -> None:
        ids = event.auth_parent_ids
        statuses = await self.statuses(ids)
        if all(a in statuses for a in ids):
            return
        answer = await self._ask(self._sources(origin, room_id), f"the auth chain of {event.event_id}",
                                 path(F1 + "/event_auth/%s/%s", room_id, event.event_id))
        chain = self._parse_all(answer.get("auth_chain") if isinstance(answer, dict) else None, rv, room_id)
        await self.store_outliers(room_id, rv, chain)

    # ---- prev events ---------------------------------------------------------------

    async def _fetch_missing_prevs(self, origin: str, room_id: str, rv: RoomVersion, event: Event) -> None:
        """get_missing_events until the gap closes (or a few rounds), then accept what
        came, oldest first. Gaps left are bridged by the state at the missing events."""
        statuses = await self.statuses(event.prev_event_ids)
        if all(p in statuses for p in event.prev_event_ids):
            return
        head = await self._head(room_id)
        collected: dict[str, Event] = {}
        latest = [event.event_id]
        for _ in range(MISSING_EVENTS_ROUNDS):
            body = {"earliest_events": head.extremities, "latest_events": latest,
                    "limit": MISSING_EVENTS_LIMIT, "min_depth": 0}
            try:
                answer = await self.federation.client.post(
                    origin, path(F1 + "/get_missing_events/%s", room_id), body)
            except FederationError as e:
                logger.info("get_missing_events from %s failed: %s", origin, e)
                break
            new = [e for e in self._parse_all(answer.get("events") if isinstance(answer, dict) else None,
                                              rv, room_id)
                   if e.event_id not in collected and e.event_id != event.event_id]
            if not new:
                break
            for e in new:
                collected[e.event_id] = e
            known = await self.statuses([p for e in collected.values() for p in e.prev_event_ids])
            frontier = [e.event_id for e in collected.values()
                        if any(p not in known and p not in collected for p in e.prev_event_ids)]
            if not frontier:
                break
            latest = frontier
        for ev in sorted(collected.values(), key=lambda e: (e.depth, e.event_id)):
            status = (await self.statuses([ev.event_id])).get(ev.event_id)
            if status is not None and status[0] != "outlier":
                continue
            try:
                await self.verify_signatures(ev)
                await self.accept(origin, room_id, rv, ev, replaces_outlier=status is not None)
            except PduError as e:
                logger.info("missing event %s not accepted: %s", ev.event_id, e)

    async def _state_after_prev(self, origin: str, room_id: str, rv: RoomVersion,
                                prev_id: str) -> tuple[int, StateMap, int]:
        """(group, state map, chain) after an event we have with its state, or else
        after one fetched with the state at it from another server."""
        status = (await self.statuses([prev_id])).get(prev_id)
        if status is not None and (status[0] != "outlier" or status[1] != 0):
            state, chain = await self.state.group(status[1])
            return status[1], state, chain
        servers = self._sources(origin, room_id)
        answer = await self._ask(servers, f"the state at {prev_id}", path(F1 + "/state_ids/%s", room_id),
                                 {"event_id": prev_id})
        if not isinstance(answer, dict) or not isinstance(answer.get("pdu_ids"), list):
            raise PduError("bad /state_ids answer")
        state_ids = [i for i in answer["pdu_ids"] if isinstance(i, str)]
        chain_ids = [i for i in answer.get("auth_chain_ids") or [] if isinstance(i, str)]
        have = await self.statuses(state_ids + chain_ids + [prev_id])
        need = [i for i in dict.fromkeys(chain_ids + state_ids + [prev_id]) if i not in have]
        fetched: list[Event] = []
        if len(need) > FETCH_ONE_BY_ONE:
            full = await self._ask(servers, f"the state at {prev_id}", path(F1 + "/state/%s", room_id),
                                   {"event_id": prev_id})
            fetched = self._parse_all((full.get("pdus") or []) + (full.get("auth_chain") or []), rv, room_id)
            need = [i for i in need if i not in {e.event_id for e in fetched}]
        results = await defer.DeferredList(
            [defer.ensureDeferred(self.fetch_event(servers, room_id, rv, i)) for i in need], consumeErrors=True)
        fetched += [r for ok, r in results if ok]
        await self.store_outliers(room_id, rv, fetched)
        events = await self.state.events(state_ids + [prev_id], rv)
        prev = events.get(prev_id)
        if prev is None:
            raise PduError(f"the prev event {prev_id} could not be fetched")
        state = {ev.key: ev.event_id for i in state_ids if (ev := events.get(i)) is not None
                 and ev.is_state() and not ev.rejected}
        if prev.is_state() and not prev.rejected:
            state[prev.key] = prev.event_id
        new_group, chain = self.state.describe_group(room_id, state, None)
        await self.hs.db.run(store.set_state_group, prev_id, room_id, new_group)
        return new_group.id, state, chain

    async def state_before(self, origin: str, room_id: str, rv: RoomVersion,
                           event: Event) -> tuple[StateMap, tuple[int, StateMap, int] | None, bool]:
        """(state before the event, the prev state it may be stored as a delta on,
        whether it equals that prev state exactly)."""
        prevs = event.prev_event_ids
        if not prevs:
            return {}, None, False
        afters = [await self._state_after_prev(origin, room_id, rv, p) for p in prevs]
        if len(afters) == 1 or all(a[1] == afters[0][1] for a in afters):
            return dict(afters[0][1]), afters[0], True
        resolved = await self.state.resolve(rv, room_id, [a[1] for a in afters])
        return resolved, afters[0], resolved == afters[0][1]

    # ---- accepting an event ------------------------------------------------------------

    async def check(self, origin: str, room_id: str, rv: RoomVersion, event: Event
                    ) -> tuple[str | None, StateMap, tuple[int, StateMap, int] | None, bool]:
        """Steps 4-5: (rejection reason or None, state before, its base, equal to base)."""
        await self._ensure_auth_events(origin, room_id, rv, event)
        auth = await self.state.events(event.auth_parent_ids, rv)
        if len(auth) < len(set(event.auth_parent_ids)):
            raise PduError("its auth events are unavailable")
        reason = self._auth_events_failure(event, auth)
        if reason is None and event.membership in ("join", "invite", "knock") \
                and not self.hs.accounts.is_mine(event.state_key or "") \
                and not self.federation.exposure.room_open(await self._head(room_id)):
            reason = "this room's organization does not take part in federation"
        before, base, same = await self.state_before(origin, room_id, rv, event)
        if reason is None:
            state_events = await self.state.events(before.values(), rv)
            reason = auth_failure(event, {k: state_events[v] for k, v in before.items() if v in state_events})
            if reason is not None:
                reason = "against the state before it: " + reason
        return reason, before, base, same

    def _group_after(self, room_id: str, event: Event, before: StateMap,
                     base: tuple[int, StateMap, int] | None, same: bool) -> tuple[int, StateMap, NewStateGroup | None, int]:
        """(group id, state after, the new group to write or None, chain length)."""
        after = dict(before)
        if event.is_state() and not event.rejected:
            after[event.key] = event.event_id
        if same and base is not None and after == base[1]:
            return base[0], after, None, base[2]
        new, chain = self.state.describe_group(room_id, after, base)
        return new.id, after, new, chain

    async def accept(self, origin: str, room_id: str, rv: RoomVersion, event: Event, *,
                     replaces_outlier: bool = False, backfilled: bool = False) -> None:
        """Steps 4-6 and persisting (the caller verified the signatures)."""
        reason, before, base, same = await self.check(origin, room_id, rv, event)
        if reason is not None:
            await self._store_rejected(room_id, event, reason, before, base, same)
            raise PduError(f"rejected: {reason}")
        group, after, new_group, chain = self._group_after(room_id, event, before, base, same)
        unsigned = await self._unsigned(rv, event, before)
        if backfilled:
            row = event_row(event, group, new_group, unsigned, apply_redaction=await self._may_redact(rv, event, before))

            def txn(cur):
                store.persist_historic(cur, [row], False, now_ms())
            await self.hs.db.run(txn)
            event.internal.update(redacted_by=None, unsigned=unsigned)
            self.hs.event_cache.put(event)
            return
        head = await self._head(room_id)
        if auth_failure(event, head.state) is not None:
            # Soft fail: stored with its state (later events may cite it), not shown, not built on.
            logger.info("soft-failing %s in %s", event.event_id, room_id)
            row = event_row(event, group, new_group, unsigned, apply_redaction=False)

            def txn(cur):
                store.persist_historic(cur, [row], True, now_ms())
            await self.hs.db.run(txn)
            return
        await self._persist_timeline(origin, room_id, rv, event, group, after, new_group, chain, unsigned,
                                     replaces_outlier, await self._may_redact(rv, event, before))

    async def _persist_timeline(self, origin: str, room_id: str, rv: RoomVersion, event: Event, group: int,
                                after: StateMap, new_group: NewStateGroup | None, chain: int, unsigned,
                                replaces_outlier: bool, apply_redaction: bool,
                                new_room: tuple | None = None) -> None:
        prevs = set(event.prev_event_ids)
        for _ in range(5):
            # The other extremities may be local events still being written: their state
            # is read from the database, so wait for them.
            await self.hs.persister.settled(room_id)
            head = await self._head(room_id)
            version = head.version
            others = [e for e in head.extremities if e not in prevs and e != event.event_id]
            extra_groups: list[NewStateGroup] = []
            room_group: tuple[int, int] | None = None
            if not others:
                current, current_group, current_chain = after, group, chain
            else:
                states = [after]
                statuses = await self.statuses(others)
                if any(x not in statuses for x in others):
                    continue  # a local event queued meanwhile: wait for it too
                for x in others:
                    states.append((await self.state.group(statuses[x][1]))[0])
                current = await self.state.resolve(rv, room_id, states, extra={event.event_id: event})
                base = (head.state_group, {k: e.event_id for k, e in head.state.items()}, head.chain_length)
                resolved_group, current_chain = self.state.describe_group(room_id, current, base)
                extra_groups.append(resolved_group)
                current_group = resolved_group.id
                room_group = (current_group, current_chain)
            needed = [eid for eid in current.values() if eid != event.event_id]
            loaded = await self.state.events(needed, rv)
            if self.hs.room_heads.peek(room_id) is head and head.version == version:
                break
        else:
            raise PduError("the room kept changing; try again")
        # From here on synchronous: the head and the queue change together.
        old = {k: e.event_id for k, e in head.state.items()}
        delta: dict[StateKey, tuple[str, str | None] | None] = {}
        for key, eid in current.items():
            if old.get(key) != eid:
                ev = event if eid == event.event_id else loaded[eid]
                delta[key] = (eid, ev.membership)
        for key in old:
            if key not in current:
                delta[key] = None
        row = event_row(event, group, new_group, unsigned, apply_redaction=apply_redaction)
        row.remote = RemoteRow(current_state_delta=delta, extremities_removed=list(prevs),
                               replaces_outlier=replaces_outlier, extra_state_groups=extra_groups,
                               room_state_group=room_group)
        row.new_room = new_room
        self._apply_to_head(head, event, current, loaded, current_group, current_chain, prevs)
        event.internal.update(redacted_by=None, unsigned=unsigned)
        self.hs.event_cache.put(event)
        await self.hs.persister.enqueue(row, event)
        self._remember_timeline(event.event_id, group)

    def _apply_to_head(self, head: RoomHead, event: Event, current: StateMap, loaded: dict[str, Event],
                       group: int, chain: int, prevs: set[str]) -> None:
        for key in [k for k in head.state if k not in current]:
            del head.state[key]
            if key[0] == "m.room.member":
                head.members.pop(key[1], None)
        for key, eid in current.items():
            existing = head.state.get(key)
            if existing is None or existing.event_id != eid:
                head.apply_state(event if eid == event.event_id else loaded[eid])
        head.extremities = [e for e in head.extremities if e not in prevs] + [event.event_id]
        head.depth = max(head.depth, event.depth)
        head.state_group, head.chain_length = group, chain
        head.version += 1

    async def _store_rejected(self, room_id: str, event: Event, reason: str, before: StateMap,
                              base: tuple[int, StateMap, int] | None, same: bool) -> None:
        logger.info("rejecting %s in %s: %s", event.event_id, room_id, reason)
        self.state.remember_rejected(event)
        if same and base is not None:
            group, new = base[0], None
        else:
            new, _ = self.state.describe_group(room_id, before, base)
            group = new.id

        def txn(cur):
            store.store_rejected(cur, [(event.event_id, room_id, _json(event), reason, group, now_ms())])
            if new is not None:
                store.insert_state_groups(cur, [(room_id, new)])
        await self.hs.db.run(txn)

    async def _unsigned(self, rv: RoomVersion, event: Event, before: StateMap) -> dict | None:
        if not event.is_state() or event.key not in before:
            return None
        previous = (await self.state.events([before[event.key]], rv)).get(before[event.key])
        if previous is None:
            return None
        return {"replaces_state": previous.event_id, "prev_content": previous.content,
                "prev_sender": previous.sender}

    async def _may_redact(self, rv: RoomVersion, event: Event, before: StateMap) -> bool:
        """A received redaction takes effect when its sender may redact the target: same
        server as the target's sender, or enough power in the state before it."""
        target_id = event.redacts
        if not target_id:
            return False
        target = (await self.state.events([target_id], rv)).get(target_id)
        if target is None or target.room_id != event.room_id:
            return False
        if server_of(target.sender) == server_of(event.sender):
            return True
        state = await self.state.events(before.values(), rv)
        mapping = {k: state[v] for k, v in before.items() if v in state}
        return auth_rules.get_user_power_level(event.sender, mapping) >= auth_rules.get_named_level("redact", mapping)


def _json(event: Event) -> str:
    return json.dumps(event.pdu, ensure_ascii=False)
