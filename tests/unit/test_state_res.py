"""State resolution v1, v2 and v2.1: worked scenarios as data (Synapse's published
state-res scenarios re-expressed as event DAGs in our own format), the v2.1 changes
shown to matter, and hypothesis properties over random forked rooms."""
from __future__ import annotations

import hashlib
import itertools
import random
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from homeserver import auth_rules
from homeserver.event import Event, StateKey
from homeserver.room_versions import V1, V2, V6, V10, V11, V12, RoomVersion
from homeserver.state_res import (
    StateResolutionError,
    conflicted_subgraph,
    is_power_event,
    lexicographic_topological_sort,
    mainline_order,
    resolve_state,
    reverse_topological_power_order,
)

ALICE = "@alice:example.com"
BOB = "@bob:example.com"
CHARLIE = "@charlie:example.com"
EVELYN = "@evelyn:example.com"
ZARA = "@zara:example.com"

JOIN = {"membership": "join"}
LEAVE = {"membership": "leave"}
BAN = {"membership": "ban"}
PL = "m.room.power_levels"
JR = "m.room.join_rules"
MEMBER = "m.room.member"
TOPIC = "m.room.topic"
CREATE = "m.room.create"


# --------------------------------------------------------------------------
# Building events of any room version
# --------------------------------------------------------------------------

def make_event(rv: RoomVersion, event_id: str, room_id: str, sender: str, event_type: str,
               state_key: str | None, content: dict, auth: list[str], prev: list[str],
               ts: int, depth: int = 1) -> Event:
    """An event in the room version's wire format (v1/v2: pairs and a carried id)."""
    def refs(ids: list[str]) -> list[Any]:
        return list(ids) if rv.event_ids_are_hashes else [[i, {}] for i in ids]
    pdu: dict[str, Any] = {
        "type": event_type, "sender": sender, "content": content,
        "auth_events": refs(auth), "prev_events": refs(prev),
        "origin_server_ts": ts, "depth": depth,
    }
    if not (rv.room_id_from_create and event_type == CREATE):
        pdu["room_id"] = room_id
    if not rv.event_ids_are_hashes:
        pdu["event_id"] = event_id
    if state_key is not None:
        pdu["state_key"] = state_key
    return Event(event_id, rv, pdu)


# --------------------------------------------------------------------------
# Scenario runner: a DAG of prev_events edges, state computed event by event
# --------------------------------------------------------------------------

@dataclass
class Node:
    name: str
    sender: str
    type: str
    state_key: str | None
    content: dict = field(default_factory=dict)


def _eid(name: str) -> str:
    return f"${name}:example.com"


ROOM = "!room:example.com"

# Every scenario starts with this room: Alice creates it (power 100), it is public,
# Bob, Charlie and Zara join, then Zara's START message; END is the merge point.
INITIAL = [
    Node("CREATE", ALICE, CREATE, "", {"creator": ALICE}),
    Node("IMA", ALICE, MEMBER, ALICE, JOIN),
    Node("IPOWER", ALICE, PL, "", {"users": {ALICE: 100}}),
    Node("IJR", ALICE, JR, "", {"join_rule": "public"}),
    Node("IMB", BOB, MEMBER, BOB, JOIN),
    Node("IMC", CHARLIE, MEMBER, CHARLIE, JOIN),
    Node("IMZ", ZARA, MEMBER, ZARA, JOIN),
    Node("START", ZARA, "m.room.message", None),
    Node("END", ZARA, "m.room.message", None),
]
INITIAL_CHAIN = ["START", "IMZ", "IMC", "IMB", "IJR", "IPOWER", "IMA", "CREATE"]


def run_scenario(rv: RoomVersion, nodes: list[Node], chains: list[list[str]],
                 shuffle: random.Random | None = None) -> tuple[dict, dict, dict[str, Event]]:
    """Walk the DAG in a fixed topological order (names ascending among the ready),
    resolving the states after an event's prev events to get the state before it.
    Events are not auth-checked on the way in: the resolution must cope.
    Returns (state at START, state after END, events by id)."""
    by_name = {n.name: n for n in [*INITIAL, *nodes]}
    prevs: dict[str, set[str]] = {name: set() for name in by_name}
    for chain in [INITIAL_CHAIN, *chains]:
        for child, parent in itertools.pairwise(chain):
            prevs[child].add(parent)
    events: dict[str, Event] = {}
    state_after: dict[str, dict[StateKey, str]] = {}
    depth: dict[str, int] = {}
    for ts, name in enumerate(lexicographic_topological_sort(prevs, key=lambda n: n)):
        node = by_name[name]
        parents = sorted(prevs[name])
        if shuffle is not None:
            shuffle.shuffle(parents)
        if not parents:
            before: dict[StateKey, str] = {}
        elif len(parents) == 1:
            before = dict(state_after[parents[0]])
        else:
            before = resolve_state(rv, [state_after[p] for p in parents], events)
        wanted = auth_rules.auth_types_for_event(node.type, node.sender, node.state_key,
                                                 node.content, rv)
        auth = [before[k] for k in wanted if k in before]
        depth[name] = 1 + max((depth[p] for p in parents), default=0)
        event = make_event(rv, _eid(name), ROOM, node.sender, node.type, node.state_key,
                           node.content, auth, [_eid(p) for p in parents], ts, depth[name])
        events[event.event_id] = event
        after = dict(before)
        if node.state_key is not None:
            after[(node.type, node.state_key)] = event.event_id
        state_after[name] = after
    return state_after["START"], state_after["END"], events


def check_scenario(rv: RoomVersion, nodes: list[Node], chains: list[list[str]],
                   expected: list[str]) -> None:
    """The state at END, on the keys `expected` names or that changed since START, is
    exactly `expected`."""
    start, end, events = run_scenario(rv, nodes, chains)
    want = {events[_eid(n)].key: _eid(n) for n in expected}
    got = {k: v for k, v in end.items() if k in want or start.get(k) != v}
    assert got == want


# Synapse's tests/state/test_v2.py scenarios, as data.
SCENARIOS_V2: dict[str, tuple[list[Node], list[list[str]], list[str]]] = {
    # Alice bans Bob while Bob (power 50) concurrently re-sends the power levels: the
    # ban comes first in power order, so Bob's power-level event no longer passes.
    "ban_vs_power_levels": (
        [Node("PA", ALICE, PL, "", {"users": {ALICE: 100, BOB: 50}}),
         Node("MA", ALICE, MEMBER, ALICE, JOIN),
         Node("MB", ALICE, MEMBER, BOB, BAN),
         Node("PB", BOB, PL, "", {"users": {ALICE: 100, BOB: 50}})],
        [["END", "MB", "MA", "PA", "START"], ["END", "PB", "PA"]],
        ["PA", "MA", "MB"]),
    # Evelyn joins concurrently with the room going private: the join rules win.
    "join_rule_evasion": (
        [Node("JR", ALICE, JR, "", {"join_rules": "private"}),
         Node("ME", EVELYN, MEMBER, EVELYN, JOIN)],
        [["END", "JR", "START"], ["END", "ME", "START"]],
        ["JR"]),
    # A chain of power-level changes by ever lower users still resolves to the last.
    "offtopic_power_levels": (
        [Node("PA", ALICE, PL, "", {"users": {ALICE: 100, BOB: 50}}),
         Node("PB", BOB, PL, "", {"users": {ALICE: 100, BOB: 50, CHARLIE: 50}}),
         Node("PC", CHARLIE, PL, "", {"users": {ALICE: 100, BOB: 50, CHARLIE: 0}})],
        [["END", "PC", "PB", "PA", "START"], ["END", "PA"]],
        ["PC"]),
    # Alice demotes Bob while Bob sets the topic: Alice's topic stands.
    "topic_basic": (
        [Node("T1", ALICE, TOPIC, ""),
         Node("PA1", ALICE, PL, "", {"users": {ALICE: 100, BOB: 50}}),
         Node("T2", ALICE, TOPIC, ""),
         Node("PA2", ALICE, PL, "", {"users": {ALICE: 100, BOB: 0}}),
         Node("PB", BOB, PL, "", {"users": {ALICE: 100, BOB: 50}}),
         Node("T3", BOB, TOPIC, "")],
        [["END", "PA2", "T2", "PA1", "T1", "START"], ["END", "T3", "PB", "PA1"]],
        ["PA2", "T2"]),
    # Bob's topic on one branch, his ban on the other: the older topic comes back.
    "topic_reset": (
        [Node("T1", ALICE, TOPIC, ""),
         Node("PA", ALICE, PL, "", {"users": {ALICE: 100, BOB: 50}}),
         Node("T2", BOB, TOPIC, ""),
         Node("MB", ALICE, MEMBER, BOB, BAN)],
        [["END", "MB", "T2", "PA", "T1", "START"], ["END", "T1"]],
        ["T1", "MB", "PA"]),
    "topic": (
        [Node("T1", ALICE, TOPIC, ""),
         Node("PA1", ALICE, PL, "", {"users": {ALICE: 100, BOB: 50}}),
         Node("T2", ALICE, TOPIC, ""),
         Node("PA2", ALICE, PL, "", {"users": {ALICE: 100, BOB: 0}}),
         Node("PB", BOB, PL, "", {"users": {ALICE: 100, BOB: 50}}),
         Node("T3", BOB, TOPIC, ""),
         Node("MZ1", ZARA, "m.room.message", None),
         Node("T4", ALICE, TOPIC, "")],
        [["END", "T4", "MZ1", "PA2", "T2", "PA1", "T1", "START"],
         ["END", "MZ1", "T3", "PB", "PA1"]],
        ["T4", "PA2"]),
    # T3 wins although T4 was sent later: T4 cites older power levels (mainline order).
    "mainline_sort": (
        [Node("T1", ALICE, TOPIC, ""),
         Node("PA1", ALICE, PL, "", {"users": {ALICE: 100, BOB: 50}}),
         Node("T2", ALICE, TOPIC, ""),
         Node("PA2", ALICE, PL, "", {"users": {ALICE: 100, BOB: 50}, "events": {PL: 100}}),
         Node("PB", BOB, PL, "", {"users": {ALICE: 100, BOB: 50}}),
         Node("T3", BOB, TOPIC, ""),
         Node("T4", ALICE, TOPIC, "")],
        [["END", "T3", "PA2", "T2", "PA1", "T1", "START"], ["END", "T4", "PB", "PA1"]],
        ["T3", "PA2"]),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS_V2))
@pytest.mark.parametrize("rv", [V2, V6, V10, V11], ids=lambda v: f"v{v.identifier}")
def test_v2_scenarios(rv: RoomVersion, name: str) -> None:
    nodes, chains, expected = SCENARIOS_V2[name]
    check_scenario(rv, nodes, chains, expected)


@pytest.mark.parametrize("name", sorted(SCENARIOS_V2))
def test_v2_scenarios_do_not_depend_on_input_order(name: str) -> None:
    nodes, chains, _ = SCENARIOS_V2[name]
    _, reference, _ = run_scenario(V2, nodes, chains)
    for seed in range(5):
        _, end, _ = run_scenario(V2, nodes, chains, shuffle=random.Random(seed))
        assert end == reference


# v1 on the same DAGs: it agrees where conflicts are simple, and shows the weaknesses
# that v2 fixed (the spec warns that v1 resets state).
V1_EXPECTED = {
    **{name: expected for name, (_, _, expected) in SCENARIOS_V2.items()},
    # Evelyn's join is on one branch only, so v1 does not see a conflict: she stays in.
    "join_rule_evasion": ["JR", "ME"],
    # Only PA and PC conflict; PC is checked against PA, where Charlie has no power,
    # so the room resets to PA: PB and PC are lost.
    "offtopic_power_levels": ["PA"],
}


@pytest.mark.parametrize("name", sorted(SCENARIOS_V2))
def test_v1_on_the_same_scenarios(name: str) -> None:
    nodes, chains, _ = SCENARIOS_V2[name]
    check_scenario(V1, nodes, chains, V1_EXPECTED[name])


# --------------------------------------------------------------------------
# State resolution v1
# --------------------------------------------------------------------------

def _v1_room() -> tuple[dict[str, Event], dict[StateKey, str]]:
    create = make_event(V1, "$c:x", "!r:x", ALICE, CREATE, "", {"creator": ALICE}, [], [], 0)
    join = make_event(V1, "$j:x", "!r:x", ALICE, MEMBER, ALICE, JOIN, ["$c:x"], ["$c:x"], 1, 2)
    pl = make_event(V1, "$p:x", "!r:x", ALICE, PL, "", {"users": {ALICE: 100, BOB: 50}},
                    ["$c:x", "$j:x"], ["$j:x"], 2, 3)
    events = {e.event_id: e for e in (create, join, pl)}
    return events, {e.key: e.event_id for e in events.values()}


def test_v1_picks_the_deepest_allowed_normal_event_and_walks_power_levels() -> None:
    events, base = _v1_room()
    auth = ["$c:x", "$p:x", "$j:x"]
    shallow = make_event(V1, "$t1:x", "!r:x", ALICE, TOPIC, "", {"topic": "a"}, auth, ["$p:x"], 3, 4)
    deep = make_event(V1, "$t2:x", "!r:x", ALICE, TOPIC, "", {"topic": "b"}, auth, ["$t1:x"], 4, 9)
    bob_topic = make_event(V1, "$t3:x", "!r:x", BOB, TOPIC, "", {"topic": "c"}, auth, ["$p:x"], 5, 12)
    events.update({e.event_id: e for e in (shallow, deep, bob_topic)})
    # Bob is not joined, so his deeper topic fails the auth rules; the deepest allowed wins.
    got = resolve_state(V1, [{**base, (TOPIC, ""): "$t1:x"}, {**base, (TOPIC, ""): "$t2:x"},
                             {**base, (TOPIC, ""): "$t3:x"}], events)
    assert got[(TOPIC, "")] == "$t2:x"
    # A key only one state has is not a conflict in v1: it is kept.
    got = resolve_state(V1, [base, {**base, (TOPIC, ""): "$t3:x"}], events)
    assert got[(TOPIC, "")] == "$t3:x"
    # Power levels: oldest first, each later one kept while it passes against the last.
    demote = make_event(V1, "$p2:x", "!r:x", ALICE, PL, "", {"users": {ALICE: 100}}, auth,
                        ["$p:x"], 6, 5)
    bob_raise = make_event(V1, "$p3:x", "!r:x", BOB, PL, "", {"users": {ALICE: 100, BOB: 100}},
                           auth, ["$p:x"], 7, 6)
    events.update({e.event_id: e for e in (demote, bob_raise)})
    got = resolve_state(V1, [{**base, (PL, ""): "$p2:x"}, {**base, (PL, ""): "$p3:x"}], events)
    assert got[(PL, "")] == "$p2:x"  # Bob (not joined, 50) cannot then raise himself


def test_v1_breaks_depth_ties_by_sha1_of_the_event_id() -> None:
    events, base = _v1_room()
    auth = ["$c:x", "$p:x", "$j:x"]
    topics = [make_event(V1, f"$t{i}:x", "!r:x", ALICE, TOPIC, "", {"topic": str(i)}, auth,
                         ["$p:x"], i, 7) for i in range(6)]
    events.update({e.event_id: e for e in topics})
    sets = [{**base, (TOPIC, ""): t.event_id} for t in topics]
    lowest_sha1 = min((t.event_id for t in topics),
                      key=lambda i: hashlib.sha1(i.encode()).hexdigest())
    assert resolve_state(V1, sets, events)[(TOPIC, "")] == lowest_sha1
    assert resolve_state(V1, sets[::-1], events)[(TOPIC, "")] == lowest_sha1
    # Power levels at equal depth walk from the highest sha1 down: the last allowed wins.
    levels = [make_event(V1, f"$pl{i}:x", "!r:x", ALICE, PL, "", {"users": {ALICE: 100, BOB: i}},
                         auth, ["$p:x"], i, 7) for i in range(4)]
    events.update({e.event_id: e for e in levels})
    sets = [{**base, (PL, ""): p.event_id} for p in levels]
    walk = sorted((p.event_id for p in levels),
                  key=lambda i: hashlib.sha1(i.encode()).hexdigest(), reverse=True)
    assert resolve_state(V1, sets, events)[(PL, "")] == walk[-1]


# --------------------------------------------------------------------------
# State resolution v2.1 (room version 12)
# --------------------------------------------------------------------------

class V12Room:
    """Events with explicit auth/prev edges in a v12 room (create implied by room id)."""

    def __init__(self, rv: RoomVersion = V12) -> None:
        self.rv = rv
        self.events: dict[str, Event] = {}
        self.ts = itertools.count(1)
        self.add("create", CREATE, "", ALICE, {}, auth=[])

    @property
    def room_id(self) -> str:
        return "!create"

    def add(self, name: str, event_type: str, state_key: str | None, sender: str,
            content: dict, auth: list[str], prev: list[str] | None = None) -> str:
        event_id = "$" + name
        event = make_event(self.rv, event_id, self.room_id, sender, event_type, state_key,
                           content, ["$" + a for a in auth], ["$" + p for p in (prev or [])],
                           next(self.ts))
        self.events[event_id] = event
        return event_id

    def state(self, *names: str) -> dict[StateKey, str]:
        return {self.events["$" + n].key: "$" + n for n in names}


def _replay_conflicted_subgraph_room(rv: RoomVersion) -> tuple[V12Room, list[dict], dict]:
    room = V12Room(rv)
    room.add("ma", MEMBER, ALICE, ALICE, JOIN, auth=[], prev=["create"])
    room.add("power1", PL, "", ALICE, {"users": {}}, auth=["ma"])
    room.add("jr", JR, "", ALICE, {"join_rule": "public"}, auth=["ma", "power1"])
    room.add("mb", MEMBER, BOB, BOB, JOIN, auth=["power1", "jr"])
    room.add("mc", MEMBER, CHARLIE, CHARLIE, JOIN, auth=["power1", "jr"])
    room.add("power2", PL, "", ALICE, {"users": {BOB: 50}}, auth=["ma", "power1"])
    room.add("power3", PL, "", BOB, {"users": {BOB: 50, CHARLIE: 50}}, auth=["mb", "power2"])
    room.add("me1", MEMBER, EVELYN, EVELYN, JOIN, auth=["power3", "jr"])
    # Evelyn's rename cites the old power levels directly, the new ones only indirectly.
    room.add("me2", MEMBER, EVELYN, EVELYN, JOIN, auth=["power1", "jr", "me1"])
    room.add("mz", MEMBER, ZARA, ZARA, JOIN, auth=["power3", "jr"])
    dodgy = room.state("create", "ma", "mb", "mc", "me2", "power1", "jr")
    sensible = room.state("create", "ma", "mb", "mc", "mz", "power3", "jr")
    expected = room.state("create", "ma", "mb", "mc", "me1", "mz", "power3", "jr")
    return room, [dodgy, sensible], expected


def _start_from_empty_room(rv: RoomVersion) -> tuple[V12Room, list[dict], dict]:
    room = V12Room(rv)
    room.add("ma1", MEMBER, ALICE, ALICE, JOIN, auth=[])
    room.add("power", PL, "", ALICE, {"users": {BOB: 100}}, auth=["ma1"])
    room.add("jr1", JR, "", ALICE, {"join_rule": "public"}, auth=["ma1", "power"])
    room.add("mb", MEMBER, BOB, BOB, JOIN, auth=["power", "jr1"])
    room.add("jr2", JR, "", ALICE, {"join_rule": "invite"}, auth=["ma1", "power"])
    room.add("ma2", MEMBER, ALICE, ALICE, LEAVE, auth=["power", "ma1"])
    correct = room.state("create", "ma2", "mb", "power", "jr2")
    # Another server hands us a fork whose state cites the old join rules.
    incorrect = room.state("create", "ma2", "mb", "power", "jr1")
    return room, [correct, incorrect], correct


V21_SCENARIOS = {
    "replay_conflicted_subgraph": _replay_conflicted_subgraph_room,
    "start_from_empty_state": _start_from_empty_room,
}


@pytest.mark.parametrize("name", sorted(V21_SCENARIOS))
def test_v21_scenarios(name: str) -> None:
    room, sets, expected = V21_SCENARIOS[name](V12)
    assert resolve_state(V12, sets, room.events) == expected
    assert resolve_state(V12, sets[::-1], room.events) == expected
    # The create event is in every chain: never part of the auth difference or subgraph.
    conflicted = {v for k in set(sets[0]) | set(sets[1]) for v in (sets[0].get(k), sets[1].get(k))
                  if v and sets[0].get(k) != sets[1].get(k)}
    assert "$create" not in conflicted_subgraph(conflicted, room.events)


def test_v21_changes_are_what_fix_the_resets() -> None:
    # The same rooms resolved with plain v2 (everything else as in v12) reset state.
    v12_with_v2 = replace(V12, state_res="v2")
    room, sets, expected = _start_from_empty_room(v12_with_v2)
    got = resolve_state(v12_with_v2, sets, room.events)
    assert (JR, "") not in got and (JR, "") in expected  # join rules lost under v2
    room, sets, expected = _replay_conflicted_subgraph_room(v12_with_v2)
    got = resolve_state(v12_with_v2, sets, room.events)
    assert got != expected
    assert got[(PL, "")] != expected[(PL, "")] or got[(MEMBER, EVELYN)] != expected[(MEMBER, EVELYN)]


def test_conflicted_subgraph_is_the_paths_between_conflicted_events() -> None:
    room = V12Room()
    room.add("a", MEMBER, ALICE, ALICE, JOIN, auth=[])
    room.add("b", PL, "", ALICE, {}, auth=["a"])
    room.add("c", PL, "", ALICE, {}, auth=["b"])
    room.add("side", TOPIC, "", ALICE, {}, auth=["b"])
    room.add("d", PL, "", ALICE, {}, auth=["c", "a"])
    # Paths from d down to b: d -> c -> b (and d -> a is a dead end below b).
    assert conflicted_subgraph({"$d", "$b"}, room.events) == {"$d", "$c", "$b"}
    assert conflicted_subgraph({"$d"}, room.events) == {"$d"}
    assert conflicted_subgraph({"$side", "$a"}, room.events) == {"$side", "$b", "$a"}


# --------------------------------------------------------------------------
# The orderings
# --------------------------------------------------------------------------

def test_lexicographic_topological_sort() -> None:
    parents = {"l": {"o"}, "m": {"n", "o"}, "n": {"o"}, "o": set(), "p": {"o"}}
    assert lexicographic_topological_sort(parents, key=lambda x: x) == ["o", "l", "n", "m", "p"]
    with pytest.raises(StateResolutionError):
        lexicographic_topological_sort({"a": {"b"}, "b": {"a"}}, key=lambda x: x)


def test_reverse_topological_power_order_tie_breaks() -> None:
    room = V12Room(V11)
    room.events.clear()
    room.add("create", CREATE, "", ALICE, {"creator": ALICE}, auth=[])
    room.add("ma", MEMBER, ALICE, ALICE, JOIN, auth=["create"], prev=["create"])
    room.add("pl", PL, "", ALICE, {"users": {ALICE: 100, BOB: 50, CHARLIE: 50}},
             auth=["create", "ma"])
    auth = ["create", "pl"]
    # Same power (Bob, Charlie at 50): earlier timestamp first, then smaller event id.
    room.add("zb", JR, "", BOB, {}, auth=auth)       # ts 4
    room.add("yc", JR, "", CHARLIE, {}, auth=auth)   # ts 5
    room.add("xa", JR, "", ALICE, {}, auth=auth)     # ts 6, but Alice has more power
    order = reverse_topological_power_order({"$zb", "$yc", "$xa", "$pl"}, room.events)
    assert order == ["$pl", "$xa", "$zb", "$yc"]
    room.events["$yc"].pdu["origin_server_ts"] = 4  # tie on ts: event id decides
    room2 = {**room.events, "$yc": room.events["$yc"]}
    assert reverse_topological_power_order({"$zb", "$yc"}, room2) == ["$yc", "$zb"]


def test_mainline_order() -> None:
    room = V12Room(V11)
    room.events.clear()
    room.add("create", CREATE, "", ALICE, {"creator": ALICE}, auth=[])
    room.add("p1", PL, "", ALICE, {}, auth=["create"])
    room.add("p2", PL, "", ALICE, {}, auth=["create", "p1"])
    room.add("p3", PL, "", ALICE, {}, auth=["create", "p2"])
    room.add("side", PL, "", ALICE, {}, auth=["create", "p1"])
    room.add("t_old", TOPIC, "", ALICE, {}, auth=["create", "p1"])     # position 2
    room.add("t_new", TOPIC, "", ALICE, {}, auth=["create", "p3"])     # position 0
    room.add("t_side", TOPIC, "", ALICE, {}, auth=["create", "side"])  # via side -> p1: 2
    room.add("t_none", TOPIC, "", ALICE, {}, auth=["create"])          # no levels: first
    order = mainline_order(["$t_new", "$t_side", "$t_old", "$t_none"], "$p3", room.events)
    assert order == ["$t_none", "$t_old", "$t_side", "$t_new"]
    # Same position and timestamp: the event id decides, whatever the input order.
    room.events["$t_side"].pdu["origin_server_ts"] = room.events["$t_old"].origin_server_ts
    for given_order in (["$t_side", "$t_old"], ["$t_old", "$t_side"]):
        assert mainline_order(given_order, "$p3", room.events) == ["$t_old", "$t_side"]


def test_missing_events_and_other_rooms_are_errors() -> None:
    events, base = _v1_room()
    other = make_event(V2, "$o:x", "!other:x", ALICE, TOPIC, "", {}, ["$c:x"], [], 9)
    events[other.event_id] = other
    with pytest.raises(StateResolutionError):
        resolve_state(V2, [base, {**base, (TOPIC, ""): "$o:x"}], events)
    with pytest.raises(StateResolutionError):
        resolve_state(V2, [base, {**base, (TOPIC, ""): "$nope:x"}], events)


# --------------------------------------------------------------------------
# Properties over random forked rooms
# --------------------------------------------------------------------------

USERS = [ALICE, BOB, CHARLIE, EVELYN]


@dataclass
class Fork:
    """A branch of a room: its state and last event, built through the auth rules."""
    state: dict[StateKey, str]
    last: str
    depth: int


class RandomRoom:
    def __init__(self, rv: RoomVersion, draw: Any) -> None:
        self.rv = rv
        self.draw = draw
        self.events: dict[str, Event] = {}
        self.counter = itertools.count()
        create_content = {} if rv.create_sender_is_creator else {"creator": ALICE}
        create = self._make(Fork({}, "", 0), ALICE, CREATE, "", create_content)
        self.events[create.event_id] = create
        self.base = Fork({create.key: create.event_id}, create.event_id, 1)
        self.room_id = create.room_id
        self.send(self.base, ALICE, MEMBER, ALICE, JOIN)
        users = {BOB: 50, CHARLIE: 50} if rv.privileged_creators else {ALICE: 100, BOB: 50, CHARLIE: 50}
        self.send(self.base, ALICE, PL, "", {"users": users})
        self.send(self.base, ALICE, JR, "", {"join_rule": "public"})
        for user in (BOB, CHARLIE, EVELYN):
            self.send(self.base, user, MEMBER, user, JOIN)

    def _make(self, fork: Fork, sender: str, event_type: str, state_key: str | None,
              content: dict) -> Event:
        n = next(self.counter)
        # Few timestamps, so that ties (broken by event id) happen.
        ts = self.draw(st.integers(0, 6)) + n // 4
        event_id = f"$e{n:03d}{self.draw(st.sampled_from('abc'))}:example.com"
        wanted = auth_rules.auth_types_for_event(event_type, sender, state_key, content, self.rv)
        auth = [fork.state[k] for k in wanted if k in fork.state]
        room_id = getattr(self, "room_id", "!room:example.com")
        if self.rv.room_id_from_create and event_type == CREATE:
            event_id = "$create" + event_id[1:].split(":")[0]
        prev = [fork.last] if fork.last else []
        return make_event(self.rv, event_id, room_id, sender, event_type, state_key, content,
                          auth, prev, ts, fork.depth + 1)

    def send(self, fork: Fork, sender: str, event_type: str, state_key: str | None,
             content: dict) -> bool:
        event = self._make(fork, sender, event_type, state_key, content)
        state = {k: self.events[v] for k, v in fork.state.items()}
        try:
            auth_rules.check_auth(event, state)
        except auth_rules.AuthError:
            return False
        self.events[event.event_id] = event
        if event.is_state():
            fork.state[event.key] = event.event_id
        fork.last, fork.depth = event.event_id, event.depth
        return True

    def random_action(self, fork: Fork) -> None:
        kind = self.draw(st.sampled_from(["pl", "ban", "kick", "join", "leave", "topic", "jr"]))
        sender = self.draw(st.sampled_from(USERS))
        target = self.draw(st.sampled_from(USERS))
        if kind == "pl":
            levels = {u: self.draw(st.sampled_from([0, 50, 100])) for u in (BOB, CHARLIE, EVELYN)}
            if not self.rv.privileged_creators:
                levels[ALICE] = 100
            self.send(fork, sender, PL, "", {"users": levels})
        elif kind in ("ban", "kick"):
            self.send(fork, sender, MEMBER, target, BAN if kind == "ban" else LEAVE)
        elif kind in ("join", "leave"):
            self.send(fork, sender, MEMBER, sender, JOIN if kind == "join" else LEAVE)
        elif kind == "topic":
            self.send(fork, sender, TOPIC, "", {"topic": str(next(self.counter))})
        else:
            rule = self.draw(st.sampled_from(["public", "invite"]))
            self.send(fork, sender, JR, "", {"join_rule": rule})

    def forks(self) -> list[Fork]:
        count = self.draw(st.integers(2, 3))
        forks = []
        for _ in range(count):
            fork = Fork(dict(self.base.state), self.base.last, self.base.depth)
            for _ in range(self.draw(st.integers(0, 4))):
                self.random_action(fork)
            forks.append(fork)
        return forks


PROPERTY = settings(max_examples=120, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
room_versions = st.sampled_from([V1, V2, V6, V10, V11, V12])


def _shuffled(state: dict, rnd: random.Random) -> dict:
    items = list(state.items())
    rnd.shuffle(items)
    return dict(items)


@PROPERTY
@given(room_versions, st.data(), st.randoms(use_true_random=False))
def test_resolution_ignores_input_order(rv: RoomVersion, data: Any, rnd: random.Random) -> None:
    room = RandomRoom(rv, data.draw)
    sets = [f.state for f in room.forks()]
    expected = resolve_state(rv, sets, room.events)
    permuted = [_shuffled(s, rnd) for s in sets]
    rnd.shuffle(permuted)
    events = _shuffled(room.events, rnd)
    assert resolve_state(rv, permuted, events) == expected
    assert resolve_state(rv, permuted, events.get) == expected  # a callable source too


@PROPERTY
@given(room_versions, st.data())
def test_resolution_keeps_what_all_agree_on(rv: RoomVersion, data: Any) -> None:
    room = RandomRoom(rv, data.draw)
    sets = [f.state for f in room.forks()]
    resolved = resolve_state(rv, sets, room.events)
    # One state, or the same state twice, resolves to itself.
    assert resolve_state(rv, [sets[0]], room.events) == sets[0]
    assert resolve_state(rv, [sets[0], dict(sets[0])], room.events) == sets[0]
    # Unconflicted keys are kept as they are.
    for key, event_id in sets[0].items():
        if all(s.get(key) == event_id for s in sets):
            assert resolved[key] == event_id
    # Every resolved entry is an event of that key; no key comes from nowhere.
    assert set(resolved) <= set().union(*sets)
    for key, event_id in resolved.items():
        assert room.events[event_id].key == key


@PROPERTY
@given(room_versions, st.data())
def test_power_order_is_topological_and_complete(rv: RoomVersion, data: Any) -> None:
    room = RandomRoom(rv, data.draw)
    room.forks()
    power = {e for e, ev in room.events.items() if is_power_event(ev)}
    order = reverse_topological_power_order(power, room.events)
    assert sorted(order) == sorted(power)
    position = {e: i for i, e in enumerate(order)}
    for event_id in power:
        stack, seen = list(room.events[event_id].auth_parent_ids), set()
        while stack:  # every power ancestor precedes it, however indirect
            ancestor = stack.pop()
            if ancestor in seen:
                continue
            seen.add(ancestor)
            if ancestor in position:
                assert position[ancestor] < position[event_id]
            stack.extend(room.events[ancestor].auth_parent_ids)


@PROPERTY
@given(st.sampled_from([V11, V12]), st.data())
def test_conflicted_subgraph_matches_its_definition(rv: RoomVersion, data: Any) -> None:
    room = RandomRoom(rv, data.draw)
    room.forks()
    state_events = sorted(e for e, ev in room.events.items() if ev.is_state())
    conflicted = set(data.draw(st.lists(st.sampled_from(state_events), min_size=1, max_size=5)))

    def ancestors_or_self(event_id: str) -> set[str]:
        seen, stack = {event_id}, [event_id]
        while stack:
            for parent in room.events[stack.pop()].auth_parent_ids:
                if parent not in seen:
                    seen.add(parent)
                    stack.append(parent)
        return seen

    # Brute force: n is on a path c1 -> ... -> n -> ... -> c2 between conflicted events.
    expected = {n for n in room.events
                if any(n in ancestors_or_self(c) for c in conflicted)
                and ancestors_or_self(n) & conflicted}
    assert conflicted_subgraph(conflicted, room.events) == expected
