"""Parsing m.ignored_user_list content: only the user ids of an `ignored_users` object;
anything malformed ignores nobody (a client's junk must not hide others' messages)."""
from hypothesis import given, strategies as st

from sync.account_data import parse_ignored


def test_parse():
    assert parse_ignored({"ignored_users": {"@a:x": {}, "@b:x": {"reason": 1}}}) == {"@a:x", "@b:x"}
    assert parse_ignored({"ignored_users": ["@a:x"]}) == frozenset()
    assert parse_ignored({}) == frozenset()
    assert parse_ignored(None) == frozenset()


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=10))
def test_never_fails(value):
    out = parse_ignored({"ignored_users": value})
    assert all(isinstance(u, str) for u in out)
