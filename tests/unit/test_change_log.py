"""The change log answers "what changed after P" exactly like a scan of every change,
or says it cannot (None) for positions older than it keeps."""
from hypothesis import given, settings, strategies as st

from sync.change_log import ChangeLog

changes = st.lists(st.tuples(st.integers(1, 200), st.sampled_from("abcdefgh")), max_size=120)


@settings(max_examples=300, deadline=None)
@given(changes, st.integers(0, 210), st.integers(0, 210), st.integers(2, 40))
def test_changed_after_matches_a_scan(recorded, since, upto, keep):
    log = ChangeLog(0, keep=keep)
    for stream, key in recorded:  # in any order: ids may commit out of allocation order
        log.record(stream, key)
    answer = log.changed_after(since, upto)
    if since < log.floor:
        assert answer is None
        return
    # Everything after the floor is still there.
    expected = {k for s, k in recorded if since < s <= upto}
    assert answer == expected
    assert log.changed_after(since) == {k for s, k in recorded if s > since}


def test_floor_rises_as_old_entries_go():
    log = ChangeLog(10, keep=4)
    for s in range(11, 20):
        log.record(s, f"r{s}")
    assert log.floor > 10
    assert log.changed_after(10) is None
    assert log.changed_after(18) == {"r19"}
    assert log.keys_after(17, 5) == ["r18", "r19"]
    assert log.keys_after(17, 1) is None


@settings(max_examples=200, deadline=None)
@given(changes, st.integers(0, 210), st.integers(0, 50))
def test_keys_after_agrees_with_changed_after(recorded, since, at_most):
    log = ChangeLog(0, keep=30)
    for stream, key in recorded:
        log.record(stream, key)
    keys = log.keys_after(since, at_most)
    changed = log.changed_after(since)
    if changed is None:
        assert keys is None
    elif len([s for s, _ in recorded if s > since]) > at_most:
        assert keys is None
    else:
        assert set(keys) == changed
