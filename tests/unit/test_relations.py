"""Relations as pure logic: what counts as a relation, which edits are valid, and which
thread a receipt's event belongs to."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from homeserver.event import Event
from homeserver.relations import (
    ANNOTATION,
    REPLACE,
    THREAD,
    Relation,
    is_valid_edit,
    receipt_thread_matches,
    relation_of,
    row_extra,
)
from homeserver.room_versions import V12

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=8)


relates_to_objects = st.fixed_dictionaries({}, optional={
    "rel_type": st.sampled_from([ANNOTATION, THREAD, REPLACE, "m.reference", "org.example", ""]) | json_values,
    "event_id": st.text(max_size=6).map(lambda s: "$" + s) | json_values,
    "key": st.text(max_size=4) | json_values,
    "m.in_reply_to": json_values,
})


@settings(max_examples=500, deadline=None)
@given(relates_to_objects | json_values)
def test_any_relates_to_parses_or_is_ignored(relates_to):
    """Whatever a client puts in m.relates_to, parsing never fails, and a relation comes
    out only when rel_type and a `$` event id are strings (the key only for annotations)."""
    rel = relation_of({"m.relates_to": relates_to})
    if rel is None:
        return
    assert isinstance(relates_to, dict)
    assert rel.rel_type == relates_to["rel_type"] and rel.parent_id == relates_to["event_id"]
    assert rel.parent_id.startswith("$") and rel.rel_type
    key = relates_to.get("key")
    assert rel.key == (key if rel.rel_type == ANNOTATION and isinstance(key, str) else None)
    assert "\x00" not in rel.parent_id + rel.rel_type + (rel.key or "")
    assert row_extra({"m.relates_to": relates_to}) == {"relation": (rel.parent_id, rel.rel_type, rel.key)}


def test_relation_examples():
    assert relation_of({"m.relates_to": {"rel_type": THREAD, "event_id": "$r"}}) == Relation(THREAD, "$r")
    assert relation_of({"m.relates_to": {"m.in_reply_to": {"event_id": "$r"}}}) is None  # a reply
    assert relation_of({"m.relates_to": {"rel_type": ANNOTATION, "event_id": "$r", "key": 1}}) \
        == Relation(ANNOTATION, "$r", None)
    assert relation_of({"m.relates_to": {"rel_type": "m.reference", "event_id": "$r\x00"}}) is None
    assert relation_of({"m.relates_to": {"rel_type": REPLACE, "event_id": "r"}}) is None
    assert relation_of("not content") is None and row_extra({}) == {}


def _event(event_id, sender, etype, content, state_key=None, room="!r:x", redacted=False) -> Event:
    pdu = {"type": etype, "room_id": room, "sender": sender, "content": content, "origin_server_ts": 1}
    if state_key is not None:
        pdu["state_key"] = state_key
    ev = Event(event_id, V12, pdu)
    ev.internal["redacted_by"] = "$red" if redacted else None
    return ev


@settings(max_examples=300, deadline=None)
@given(same_sender=st.booleans(), same_type=st.booleans(), same_room=st.booleans(),
       original_state=st.booleans(), edit_state=st.booleans(), original_is_edit=st.booleans(),
       new_content=st.sampled_from(["dict", "string", "absent"]), right_parent=st.booleans(),
       edit_redacted=st.booleans())
def test_edit_validity_is_the_spec_rules(same_sender, same_type, same_room, original_state, edit_state,
                                         original_is_edit, new_content, right_parent, edit_redacted):
    original_content = {"body": "hi"}
    if original_is_edit:
        original_content["m.relates_to"] = {"rel_type": REPLACE, "event_id": "$older"}
    original = _event("$o", "@a:x", "m.room.message", original_content, "" if original_state else None)
    content = {"body": "* hey", "m.relates_to": {"rel_type": REPLACE,
                                                 "event_id": "$o" if right_parent else "$other"}}
    if new_content != "absent":
        content["m.new_content"] = {"body": "hey"} if new_content == "dict" else "hey"
    edit = _event("$e", "@a:x" if same_sender else "@b:x", "m.room.message" if same_type else "m.sticker",
                  content, "" if edit_state else None, "!r:x" if same_room else "!s:x", edit_redacted)
    expected = (same_sender and same_type and same_room and not original_state and not edit_state
                and not original_is_edit and new_content == "dict" and right_parent and not edit_redacted)
    assert is_valid_edit(original, edit) is expected


def test_receipt_threads():
    # $e -m.annotation-> $t -m.thread-> $root : $e is in thread $root.
    chain = [("$e", "$t", ANNOTATION), ("$t", "$root", THREAD)]
    assert receipt_thread_matches(chain, "$e", "$root")
    assert not receipt_thread_matches(chain, "$e", "main")
    assert not receipt_thread_matches(chain, "$e", "$t")
    # The root itself, and events related to it other than by m.thread, are in the main
    # timeline, and may carry a receipt for the root's thread too.
    assert receipt_thread_matches([], "$root", "main") and receipt_thread_matches([], "$root", "$root")
    ref = [("$d", "$root", "m.reference")]
    assert receipt_thread_matches(ref, "$d", "main") and receipt_thread_matches(ref, "$d", "$root")
    assert not receipt_thread_matches(ref, "$d", "$elsewhere")
    assert not receipt_thread_matches([], "$plain", "$root")
