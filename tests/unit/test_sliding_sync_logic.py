"""Pure parts of sliding sync: the incrementally sorted room order, and required_state's
union, cover and match rules."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sync.room_list import _UserOrder
from sync.sliding_request import RequiredState, parse_required_state

ROOMS = [f"!r{i}:x" for i in range(8)]


@given(st.lists(st.tuples(st.sampled_from(ROOMS), st.integers(0, 20)), max_size=60))
def test_placing_rooms_keeps_the_order_sorted_newest_first(moves):
    order = _UserOrder(0)
    for room_id, stamp in moves:
        order.place(room_id, stamp)
    assert order.entries == sorted((-s, r) for r, s in order.stamps.items())
    assert len(order.entries) == len(order.stamps)


TYPES = ["m.room.member", "m.room.name", "org.x", "*"]
KEYS = ["", "@me:x", "@b:x", "$ME", "$LAZY", "*"]
PAIRS = st.lists(st.tuples(st.sampled_from(TYPES), st.sampled_from(KEYS)).map(list), max_size=6)
CONCRETE = [(t, k) for t in TYPES[:3] for k in ("", "@me:x", "@b:x")]


def _matched(rs: RequiredState) -> set:
    return {(t, k) for t, k in CONCRETE if rs.matches(t, k, "@me:x")}


@settings(max_examples=300)
@given(PAIRS, PAIRS)
def test_union_covers_both_and_cover_implies_matching_more(a_pairs, b_pairs):
    a, b = parse_required_state(a_pairs, "a"), parse_required_state(b_pairs, "b")
    both = a.union(b)
    assert both.covers(a) and both.covers(b)
    assert _matched(both) == _matched(a) | _matched(b)
    if a.covers(b):
        assert _matched(b) <= _matched(a)
        assert a.lazy or not b.lazy or a.everything


def test_required_state_forms():
    rs = parse_required_state([["m.room.member", "$ME"], ["org.x", "*"], ["*", "@b:x"]], "r")
    assert rs.matches("m.room.member", "@me:x", "@me:x")
    assert not rs.matches("m.room.member", "@c:x", "@me:x")
    assert rs.matches("org.x", "anything", "@me:x")
    assert rs.matches("m.room.name", "@b:x", "@me:x")
    assert parse_required_state([["*", "*"]], "r").everything
    assert parse_required_state([["m.room.member", "$LAZY"]], "r").lazy
