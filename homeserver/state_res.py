"""State resolution: merging the room states of forked branches of the event DAG.

Three algorithms, chosen by `RoomVersion.state_res`:

* **v1** (room version 1): power levels, then join rules, then memberships, each
  conflict settled by walking its candidates oldest first while they pass the auth
  rules; other keys take the newest candidate that passes.
* **v2** (rooms 2-11): the spec's algorithm: full conflicted set (conflicted events plus
  the auth difference), power events in reverse topological power order checked from
  the unconflicted state, then the rest in mainline order, then the unconflicted
  state laid back on top.
* **v2.1** (room 12, MSC4297): v2, but the full conflicted set also holds the
  conflicted state subgraph (events on auth paths between conflicted events) and the
  power events are replayed from an empty state, so their auth events decide.

Pure logic, no I/O: the caller passes the state sets as (type, state_key) -> event id
maps and the events as a mapping or a callable (event id -> Event). Every event
reachable through auth events must be available; the module never fetches anything
itself. It is CPU work: run it off the reactor (`deferToThread`) for large rooms.

Auth chains are walked through `Event.auth_parent_ids`, so a v12 event's implied
create event (the room id names it) counts as an auth event, as in Synapse.
"""
from __future__ import annotations

import hashlib
import heapq
import math
from collections.abc import Callable, Iterable, Mapping, Sequence

from homeserver import auth_rules
from homeserver.event import Event, StateKey
from homeserver.room_versions import RoomVersion

StateMap = Mapping[StateKey, str]
EventSource = Mapping[str, Event] | Callable[[str], "Event | None"]

POWER_LEVELS_KEY: StateKey = ("m.room.power_levels", "")


class StateResolutionError(Exception):
    """The inputs cannot be resolved: an event is missing or from another room."""


def resolve_state(rv: RoomVersion, state_sets: Sequence[StateMap],
                  events: EventSource) -> dict[StateKey, str]:
    """The resolution of `state_sets` under the room version's algorithm."""
    sets = [dict(s) for s in state_sets]
    if not sets:
        return {}
    if len(sets) == 1:
        return sets[0]
    fetch = _Events(events)
    if rv.state_res == "v1":
        return _resolve_v1(rv, sets, fetch)
    return _resolve_v2(rv, sets, fetch, v21=rv.state_res == "v2.1")


class _Events:
    """Event lookup for one resolution: cached, and all from one room."""

    def __init__(self, source: EventSource) -> None:
        self._get = source.get if isinstance(source, Mapping) else source
        self._seen: dict[str, Event] = {}
        self._room_id: str | None = None

    def __call__(self, event_id: str) -> Event:
        event = self._seen.get(event_id)
        if event is not None:
            return event
        event = self._get(event_id)
        if event is None or event.event_id != event_id:
            raise StateResolutionError(f"event {event_id} is not available")
        room_id = event.room_id
        if self._room_id is None:
            self._room_id = room_id
        elif room_id != self._room_id:
            raise StateResolutionError(f"event {event_id} is in {room_id}, not {self._room_id}")
        self._seen[event_id] = event
        return event

    def parents(self, event_id: str) -> list[str]:
        return self(event_id).auth_parent_ids


def _state_of(events: Iterable[Event]) -> dict[StateKey, Event]:
    return {e.key: e for e in events if e.is_state()}


# --------------------------------------------------------------------------
# v1
# --------------------------------------------------------------------------

def _separate_v1(sets: list[dict[StateKey, str]]) -> tuple[dict[StateKey, str], dict[StateKey, set[str]]]:
    """v1 calls a key conflicted only where two states give it different events; a key
    that some states lack keeps the one event the others agree on (as Synapse does)."""
    unconflicted: dict[StateKey, str] = {}
    conflicted: dict[StateKey, set[str]] = {}
    for state in sets:
        for key, event_id in state.items():
            if key in conflicted:
                conflicted[key].add(event_id)
            elif key not in unconflicted:
                unconflicted[key] = event_id
            elif unconflicted[key] != event_id:
                conflicted[key] = {unconflicted.pop(key), event_id}
    return unconflicted, conflicted


class _LazyState(Mapping[StateKey, Event]):
    """A state map of event ids that loads each event only when the auth rules ask."""

    def __init__(self, ids: dict[StateKey, str], fetch: _Events) -> None:
        self.ids = ids
        self._fetch = fetch

    def __getitem__(self, key: StateKey) -> Event:
        return self._fetch(self.ids[key])

    def __iter__(self):
        return iter(self.ids)

    def __len__(self) -> int:
        return len(self.ids)


def _sha1(event_id: str) -> int:
    return int(hashlib.sha1(event_id.encode("utf-8")).hexdigest(), 16)


def _allowed(event: Event, state: Mapping[StateKey, Event]) -> bool:
    try:
        auth_rules.check_auth(event, state)
    except auth_rules.AuthError:
        return False
    return True


def _resolve_v1(rv: RoomVersion, sets: list[dict[StateKey, str]], fetch: _Events) -> dict[StateKey, str]:
    unconflicted, conflicted = _separate_v1(sets)
    resolved = _LazyState(dict(unconflicted), fetch)

    def walk_oldest_first(key: StateKey) -> None:
        # Ascending depth, then descending sha1(event_id); keep going while allowed.
        candidates = sorted((fetch(e) for e in conflicted[key]),
                            key=lambda e: (e.depth, -_sha1(e.event_id)))
        resolved.ids[key] = candidates[0].event_id
        for event in candidates[1:]:
            if not _allowed(event, resolved):
                break
            resolved.ids[key] = event.event_id

    auth_order = [k for k in conflicted if k == POWER_LEVELS_KEY]
    auth_order += sorted(k for k in conflicted if k[0] == "m.room.join_rules")
    auth_order += sorted(k for k in conflicted if k[0] == "m.room.member")
    for key in auth_order:
        walk_oldest_first(key)
    for key in sorted(set(conflicted) - set(auth_order)):
        # Highest depth, then lowest sha1(event_id), that passes; else the last one.
        candidates = sorted((fetch(e) for e in conflicted[key]),
                            key=lambda e: (-e.depth, _sha1(e.event_id)))
        chosen = next((e for e in candidates if _allowed(e, resolved)), candidates[-1])
        resolved.ids[key] = chosen.event_id
    return resolved.ids


# --------------------------------------------------------------------------
# v2 and v2.1
# --------------------------------------------------------------------------

def _separate_v2(sets: list[dict[StateKey, str]]) -> tuple[dict[StateKey, str], dict[StateKey, set[str]]]:
    """A key is unconflicted only if every state has it with the same event."""
    unconflicted: dict[StateKey, str] = {}
    conflicted: dict[StateKey, set[str]] = {}
    for key in set().union(*sets):
        values = {state.get(key) for state in sets}
        if len(values) == 1 and None not in values:
            unconflicted[key] = values.pop()
        else:
            values.discard(None)
            conflicted[key] = values  # type: ignore[assignment]
    return unconflicted, conflicted


def _closure(start: Iterable[str], fetch: _Events) -> set[str]:
    """The events of `start` and everything reachable from them through auth events."""
    seen = set(start)
    stack = list(seen)
    while stack:
        for parent in fetch.parents(stack.pop()):
            if parent not in seen:
                seen.add(parent)
                stack.append(parent)
    return seen


def _auth_difference(sets: list[dict[StateKey, str]], fetch: _Events) -> set[str]:
    """Events in some but not all of the states' full auth chains. A state's full auth
    chain here includes the state events themselves, as Synapse computes it."""
    chains = [_closure(state.values(), fetch) for state in sets]
    return set().union(*chains) - set.intersection(*chains)


def conflicted_subgraph(conflicted: set[str], fetch: EventSource | _Events) -> set[str]:
    """v2.1: every event on an auth-events path from one conflicted event to another,
    endpoints included: the events that are both an auth ancestor (or self) of some
    conflicted event and an auth descendant (or self) of some conflicted event."""
    fetch = fetch if isinstance(fetch, _Events) else _Events(fetch)
    ancestors = _closure(conflicted, fetch)
    children: dict[str, list[str]] = {}
    for event_id in ancestors:
        for parent in fetch.parents(event_id):
            children.setdefault(parent, []).append(event_id)
    # Walk from the conflicted events towards their descendants, inside `ancestors`.
    subgraph = set(conflicted)
    stack = list(conflicted)
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in subgraph:
                subgraph.add(child)
                stack.append(child)
    return subgraph


def is_power_event(event: Event) -> bool:
    """Events that may take away someone's ability to act: power levels, join rules,
    and kicks/bans (a leave or ban sent by someone other than its target)."""
    if not event.is_state():
        return False
    if event.type in ("m.room.power_levels", "m.room.join_rules"):
        return event.state_key == ""
    if event.type == "m.room.member" and event.membership in ("leave", "ban"):
        return event.sender != event.state_key
    return False


def _sender_power(event: Event, fetch: _Events) -> float:
    """The sender's power level according to the event's own auth events."""
    auth_state = _state_of(fetch(a) for a in event.auth_parent_ids)
    return auth_rules.get_user_power_level(event.sender, auth_state)


def reverse_topological_power_order(event_ids: set[str], fetch: EventSource | _Events) -> list[str]:
    """Kahn's algorithm over the auth DAG restricted to `event_ids` (an event comes
    after its auth ancestors), taking at each step the smallest ready event by: higher
    sender power level, then lower origin_server_ts, then lower event id."""
    fetch = fetch if isinstance(fetch, _Events) else _Events(fetch)

    def key(event_id: str) -> tuple[float, int, str]:
        event = fetch(event_id)
        return (-_sender_power(event, fetch), event.origin_server_ts, event_id)

    return lexicographic_topological_sort(_nearest_members(event_ids, fetch), key)


def lexicographic_topological_sort(parents: Mapping[str, Iterable[str]],
                                   key: Callable[[str], object]) -> list[str]:
    """Kahn's algorithm: every node after its parents, taking the smallest `key` among
    the nodes whose parents are all placed. `parents` must name only its own keys."""
    waiting = {node: 0 for node in parents}
    children: dict[str, list[str]] = {}
    for node, node_parents in parents.items():
        for parent in set(node_parents):
            waiting[node] += 1
            children.setdefault(parent, []).append(node)
    ready = [(key(node), node) for node, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    ordered: list[str] = []
    while ready:
        _, node = heapq.heappop(ready)
        ordered.append(node)
        for child in children.get(node, ()):
            waiting[child] -= 1
            if waiting[child] == 0:
                heapq.heappush(ready, (key(child), child))
    if len(ordered) != len(waiting):
        raise StateResolutionError("the graph has a cycle")
    return ordered


def _nearest_members(members: set[str], fetch: _Events) -> dict[str, set[str]]:
    """For each member, the members that are its nearest auth ancestors, looking through
    non-members in between, so that the ordering honours every auth path."""
    below: dict[str, frozenset[str]] = {}  # non-member -> nearest members at or below it

    def frontier(event_id: str) -> frozenset[str]:
        if event_id in members:
            return frozenset((event_id,))
        if event_id in below:
            return below[event_id]
        # Iterative depth-first post-order over non-members (histories can be deep);
        # `on_path` catches cycles, which forged v1/v2 event ids could make.
        stack = [(event_id, iter(fetch.parents(event_id)))]
        on_path = {event_id}
        while stack:
            node, parents = stack[-1]
            for parent in parents:
                if parent in members or parent in below:
                    continue
                if parent in on_path:
                    raise StateResolutionError(f"auth events form a cycle at {parent}")
                on_path.add(parent)
                stack.append((parent, iter(fetch.parents(parent))))
                break
            else:
                stack.pop()
                on_path.discard(node)
                found: set[str] = set()
                for parent in fetch.parents(node):
                    found |= {parent} if parent in members else below[parent]
                below[node] = frozenset(found)
        return below[event_id]

    return {m: set().union(*(frontier(p) for p in fetch.parents(m))) for m in members}


def _power_levels_parent(event: Event, fetch: _Events) -> str | None:
    for auth_id in event.auth_parent_ids:
        parent = fetch(auth_id)
        if parent.is_state() and parent.key == POWER_LEVELS_KEY:
            return auth_id
    return None


def _power_levels_history(event: Event, fetch: _Events) -> Iterable[str]:
    """The power levels event among the event's auth events, then the one among its
    auth events, and so on. v1/v2 ids are chosen by senders, so a forged cycle is
    possible: it ends the walk instead of looping."""
    seen: set[str] = set()
    current = _power_levels_parent(event, fetch)
    while current is not None and current not in seen:
        seen.add(current)
        yield current
        current = _power_levels_parent(fetch(current), fetch)


def mainline_order(event_ids: Iterable[str], power_levels_id: str | None,
                   fetch: EventSource | _Events) -> list[str]:
    """Sort by mainline position based on the power levels event (events whose power
    levels history joins the mainline earlier come first; none at all: first of all),
    then origin_server_ts, then event id."""
    fetch = fetch if isinstance(fetch, _Events) else _Events(fetch)
    mainline: list[str] = []
    if power_levels_id is not None:
        mainline = [power_levels_id, *_power_levels_history(fetch(power_levels_id), fetch)]
    position = {event_id: i for i, event_id in enumerate(mainline)}
    found: dict[str, float] = {}  # power levels event -> the position its history reaches

    def mainline_position(event: Event) -> float:
        walked: list[str] = []
        result = math.inf
        for pl_id in _power_levels_history(event, fetch):
            if pl_id in position:
                result = position[pl_id]
                break
            if pl_id in found:
                result = found[pl_id]
                break
            walked.append(pl_id)
        for pl_id in walked:
            found[pl_id] = result
        return result

    def key(event_id: str) -> tuple[float, int, str]:
        event = fetch(event_id)
        return (-mainline_position(event), event.origin_server_ts, event_id)

    return sorted(event_ids, key=key)


def iterative_auth_checks(rv: RoomVersion, event_ids: Iterable[str], base: StateMap,
                          fetch: EventSource | _Events) -> dict[StateKey, str]:
    """Apply each event in turn to the state if the auth rules allow it there. Keys the
    rules need come from the state built so far, else from the event's own (not
    rejected) auth events."""
    fetch = fetch if isinstance(fetch, _Events) else _Events(fetch)
    state = dict(base)
    for event_id in event_ids:
        event = fetch(event_id)
        auth_state = _state_of(a for a in map(fetch, event.auth_parent_ids) if not a.rejected)
        needed = auth_rules.auth_types_for_event(
            event.type, event.sender, event.state_key, event.content, rv)
        for key in needed:
            current = state.get(key)
            if current is not None and not fetch(current).rejected:
                auth_state[key] = fetch(current)
        if event.is_state() and _allowed(event, auth_state):
            state[event.key] = event_id
    return state


def _resolve_v2(rv: RoomVersion, sets: list[dict[StateKey, str]], fetch: _Events,
                v21: bool) -> dict[StateKey, str]:
    unconflicted, conflicted = _separate_v2(sets)
    if not conflicted:
        return unconflicted
    conflicted_ids: set[str] = set().union(*conflicted.values())
    full = conflicted_ids | _auth_difference(sets, fetch)
    if v21:
        full |= conflicted_subgraph(conflicted_ids, fetch)
    # Step 1: the power events, with the events of their auth chains in the full set.
    power = {e for e in full if is_power_event(fetch(e))}
    in_chains = _closure(power, fetch) & full if power else set()
    power_order = reverse_topological_power_order(power | in_chains, fetch)
    # Step 2: v2 replays them on the unconflicted state, v2.1 on an empty one.
    partial = iterative_auth_checks(rv, power_order, {} if v21 else unconflicted, fetch)
    # Steps 3-4: everything else, in mainline order of the partially resolved levels.
    picked = set(power_order)
    rest = mainline_order((e for e in full if e not in picked),
                          partial.get(POWER_LEVELS_KEY), fetch)
    resolved = iterative_auth_checks(rv, rest, partial, fetch)
    # Step 5: the unconflicted state wins wherever it has the key.
    resolved.update(unconflicted)
    return resolved
