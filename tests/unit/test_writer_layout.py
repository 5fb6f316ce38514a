"""The hand-over of rooms between writers (homeserver/writer_layout.py): whatever the
releases heard so far, a room never has two builders, and once every previous writer has
released (or is gone) its new owner alone builds it."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from homeserver.writer_layout import Layout, parse_notice

NAMES = [f"w{i}" for i in range(6)]
writer_sets = st.lists(st.sampled_from(NAMES), min_size=1, max_size=6, unique=True)
room_ids = st.text("abcdefghij0123456789", min_size=1, max_size=12).map(lambda s: f"!{s}:example.org")


@given(writer_sets, writer_sets, st.lists(room_ids, min_size=1, max_size=20), st.data())
def test_a_room_never_has_two_builders(before, after, rooms, data):
    released = frozenset(data.draw(st.lists(st.sampled_from(before), unique=True)))
    # Passed over (no database session): released on their behalf. They may not know it,
    # and their batches are refused in the database (WriterLayout.fence): not builders.
    gone = set(data.draw(st.lists(st.sampled_from(before), unique=True))) - released
    layout = Layout(2, tuple(after), tuple(before), released | gone)
    for room in rooms:
        builders = {w for w in NAMES if w not in gone and layout.may_build(room, w)}
        assert len(builders) <= 1, (room, builders)
        assert builders <= {layout.owner(room), layout.previous_owner(room)}
        if layout.previous_owner(room) in released | gone or layout.previous_owner(room) == layout.owner(room):
            assert builders == {layout.owner(room)} - gone


@given(writer_sets, st.lists(room_ids, min_size=1, max_size=20))
def test_without_a_move_the_owner_builds(writers, rooms):
    for layout in (Layout(1, tuple(writers)), Layout(3, tuple(writers), tuple(writers))):
        for room in rooms:
            assert {w for w in NAMES if layout.may_build(room, w)} == {layout.owner(room)}


def test_a_move_is_over_when_every_previous_writer_released():
    layout = Layout(2, ("w1", "w2", "w3"), ("w1", "w2"))
    assert layout.moving
    assert Layout(2, layout.writers, layout.previous, frozenset({"w1"})).moving
    assert not Layout(2, layout.writers, layout.previous, frozenset({"w1", "w2"})).moving


def test_notices_name_a_generation_and_what_changed():
    assert parse_notice("4 w1,w3") == (4, "writers", "w1,w3")
    assert parse_notice("4 released w2") == (4, "released", "w2")
