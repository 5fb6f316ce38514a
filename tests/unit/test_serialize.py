"""The cached JSON fragment /sync sends must be exactly the event's client form."""
import json

import orjson

from hypothesis import given, settings, strategies as st

from homeserver.event import Event
from homeserver.room_versions import V12
from homeserver.serialize import client_fragment, serialize_event

text = st.text(max_size=20)
content = st.dictionaries(st.text(min_size=1, max_size=8), st.one_of(text, st.integers(-1000, 1000)), max_size=4)


@settings(max_examples=200, deadline=None)
@given(content, st.one_of(st.none(), text), st.one_of(st.none(), content))
def test_fragment_equals_client_form(body, state_key, prev_content):
    pdu = {"type": "m.room.message", "room_id": "!r:x", "sender": "@a:x", "content": body,
           "origin_server_ts": 1_000, "depth": 3, "prev_events": [], "auth_events": [], "hashes": {}}
    if state_key is not None:
        pdu["state_key"] = state_key
    ev = Event("$e", V12, pdu)
    if prev_content is not None:
        ev.internal["unsigned"] = {"prev_content": prev_content, "replaces_state": "$p"}
    fragment = client_fragment(ev, now=5_000)
    expected = serialize_event(ev, None, None, now=5_000, include_room_id=False)
    assert json.loads(orjson.dumps(fragment)) == expected
    # reused bytes, fresh age
    assert json.loads(orjson.dumps(client_fragment(ev, now=9_000)))["unsigned"]["age"] == 8_000


def test_no_fragment_for_unencodable_text():
    ev = Event("$e", V12, {"type": "t", "room_id": "!r:x", "sender": "@a:x", "content": {"b": "\ud800"},
                           "origin_server_ts": 1})
    assert client_fragment(ev, now=2) is None


def test_response_encoder_falls_back_with_fragments_inside():
    from client_api.http import encode_json
    ev = Event("$e", V12, {"type": "t", "room_id": "!r:x", "sender": "@a:x", "content": {"b": "ok"},
                           "origin_server_ts": 1})
    body = {"events": [client_fragment(ev, now=2)], "other": "\ud800"}  # forces the stdlib path
    decoded = json.loads(encode_json(body))
    assert decoded["events"][0]["content"] == {"b": "ok"} and decoded["other"] == "\ud800"


def test_timeline_cache_tail_answers_only_what_it_knows():
    from homeserver.room_versions import V11
    from sync.timeline_cache import PER_ROOM, TimelineCache

    def ev(i, etype="m.room.message"):
        e = Event(f"$e{i}", V11, {"type": etype, "room_id": "!r:x", "sender": "@a:x", "content": {}})
        e.stream_ordering = i
        return e

    cache = TimelineCache()
    cache.on_events([ev(1, "m.room.create")] + [ev(i) for i in range(2, 11)])
    page, limited = cache.tail("!r:x", 0, 10, 3, None)
    assert [e.stream_ordering for e in page] == [8, 9, 10] and limited
    page, limited = cache.tail("!r:x", 0, 10, 50, None)
    assert len(page) == 10 and not limited  # a room born here: the cache has it all
    # A room first seen mid-life: the newest page is known, the whole history is not.
    late = TimelineCache()
    late.on_events([ev(i) for i in range(500, 500 + PER_ROOM + 20)])
    page, limited = late.tail("!r:x", 0, 10**6, 10, None)
    assert limited and page[-1].stream_ordering == 500 + PER_ROOM + 19
    assert late.tail("!r:x", 0, 10**6, PER_ROOM + 5, None) is None
    page, limited = late.tail("!r:x", 600, 10**6, 1000, None)
    assert not limited and page[0].stream_ordering == 601
    assert late.tail("!r:x", 0, 10**6, 5, lambda e: e.type == "m.room.name") is None


def test_redaction_names_its_target_top_level_and_in_content_in_every_version():
    from homeserver.room_versions import V1, V10, V11

    old = Event("$r", V10, {"type": "m.room.redaction", "room_id": "!r:x", "sender": "@a:x",
                            "redacts": "$t", "content": {"reason": "spam"}, "origin_server_ts": 1})
    new = Event("$r", V11, {"type": "m.room.redaction", "room_id": "!r:x", "sender": "@a:x",
                            "content": {"redacts": "$t", "reason": "spam"}, "origin_server_ts": 1})
    for ev in (old, new):
        client = serialize_event(ev, now=2)
        assert client["redacts"] == "$t" and client["content"]["redacts"] == "$t"
        assert client["content"]["reason"] == "spam"
    assert "redacts" not in old.pdu["content"]  # the stored PDU is left alone
    legacy = Event("$r:x", V1, {**old.pdu, "event_id": "$r:x"})
    assert serialize_event(legacy, now=2)["event_id"] == "$r:x"


@settings(max_examples=100, deadline=None)
@given(content, content)
def test_fragment_with_bundled_aggregations_equals_client_form(body, bundled):
    """The bundle's bytes are spliced into the shared fragment as unsigned.m.relations."""
    ev = Event("$e", V12, {"type": "m.room.message", "room_id": "!r:x", "sender": "@a:x", "content": body,
                           "origin_server_ts": 1_000})
    relations = {"m.reference": {"chunk": [{"event_id": "$r"}]}, "x": bundled}
    fragment = client_fragment(ev, now=5_000, relations=orjson.dumps(relations))
    expected = serialize_event(ev, None, None, now=5_000, include_room_id=False, relations=relations)
    assert json.loads(orjson.dumps(fragment)) == expected
    # the same cached bytes still serve recipients without a bundle
    plain = json.loads(orjson.dumps(client_fragment(ev, now=5_000)))
    assert "m.relations" not in plain["unsigned"]
