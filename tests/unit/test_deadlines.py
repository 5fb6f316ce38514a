"""sync/deadlines.py: long-poll timeouts filed by slot under one timer."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sync.deadlines import Deadlines

RES = 0.05
EPS = 1e-9
times = st.integers(min_value=0, max_value=100_000).map(lambda ms: ms / 1000)


@given(st.lists(times, max_size=60), st.lists(times, max_size=10))
def test_each_item_comes_out_once_never_early_and_at_most_a_slot_late(ats, checks):
    d: Deadlines[int] = Deadlines(RES)
    for i, at in enumerate(ats):
        d.add(at, i)
    out: set[int] = set()
    for now in sorted(checks) + [max(ats, default=0) + 2 * RES]:
        taken = d.due(now)
        assert not out & set(taken), "came out twice"
        assert all(ats[i] <= now + EPS for i in taken), "out before its deadline"
        out.update(taken)
        late = [i for i, at in enumerate(ats) if at + RES * 1.0001 <= now and i not in out]
        assert not late, "held past its slot"
        nxt = d.next_at()
        assert nxt is None or nxt > now
    assert out == set(range(len(ats)))
    assert d.size == 0 and d.next_at() is None


@given(st.lists(st.tuples(times, st.booleans()), max_size=60))
def test_compact_keeps_exactly_the_waiting_items(entries):
    d: Deadlines[int] = Deadlines(RES)
    for i, (at, _) in enumerate(entries):
        d.add(at, i)
    waiting = {i for i, (_, w) in enumerate(entries) if w}
    d.compact(lambda i: i in waiting)
    assert d.size == len(waiting)
    earliest = min((entries[i][0] for i in waiting), default=None)
    assert (d.next_at() is None) == (earliest is None)
    if earliest is not None:
        assert earliest - EPS <= d.next_at() <= earliest + RES * 1.0001
    assert set(d.due(10**6)) == waiting
