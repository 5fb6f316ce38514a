"""The per-device record of member events sent for lazy loading: a member counts as sent
only once the device syncs from a token at or past the response that carried it, only
for the same event, and the record stays bounded."""
from hypothesis import given, settings, strategies as st

from sync.lazy_members import SentMembers


def test_sent_once_the_device_has_moved_past_the_response():
    sent = SentMembers()
    sent.record("@u:x", "D1", "!r:x", "@m:x", "$join", pos=10)
    assert not sent.already_sent("@u:x", "D1", "!r:x", "@m:x", "$join", since_pos=9)  # a retry
    assert sent.already_sent("@u:x", "D1", "!r:x", "@m:x", "$join", since_pos=10)
    assert not sent.already_sent("@u:x", "D2", "!r:x", "@m:x", "$join", since_pos=10)  # other device
    assert not sent.already_sent("@u:x", "D1", "!r2:x", "@m:x", "$join", since_pos=10)  # other room
    assert not sent.already_sent("@u:x", "D1", "!r:x", "@m:x", "$rename", since_pos=10)  # newer event


def test_a_resend_keeps_the_earliest_position():
    sent = SentMembers()
    sent.record("@u:x", "D", "!r:x", "@m:x", "$e", pos=10)
    sent.record("@u:x", "D", "!r:x", "@m:x", "$e", pos=20)
    assert sent.already_sent("@u:x", "D", "!r:x", "@m:x", "$e", since_pos=15)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 500), max_size=300), st.integers(1, 50))
def test_bounded(members, bound):
    sent = SentMembers(max_entries=bound)
    for m in members:
        sent.record("@u:x", "D", "!r:x", f"@{m}:x", "$e", pos=1)
    assert len(sent._sent) <= bound
    if members:  # the most recent is always kept
        assert sent.already_sent("@u:x", "D", "!r:x", f"@{members[-1]}:x", "$e", since_pos=1)
