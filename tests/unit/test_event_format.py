"""Canonical JSON, content/reference hashes and signatures: the spec's test vectors plus
hypothesis searching for counterexamples."""
import copy
import json

import canonicaljson
from hypothesis import given, settings, strategies as st
from signedjson.key import decode_signing_key_base64, get_verify_key

from homeserver.canonical_json import CanonicalJsonError, encode_canonical_json
from homeserver.event_hashing import (
    add_content_hash,
    check_content_hash,
    compute_event_id,
    sign_event,
    verify_event_signature,
)
from homeserver.redaction import prune_event_dict
from homeserver.room_versions import V10, V11, V12

SEED = "YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1"
KEY = decode_signing_key_base64("ed25519", "1", SEED)

json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**53) + 1, 2**53 - 1), st.text()
)
json_values = st.recursive(
    json_leaf,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_canonical_json_matches_reference_library_and_round_trips(value):
    ours = encode_canonical_json(value)
    assert ours == canonicaljson.encode_canonical_json(value)
    assert json.loads(ours) == value
    # key order of the input never matters
    if isinstance(value, dict):
        reordered = dict(reversed(list(value.items())))
        assert encode_canonical_json(reordered) == ours


@given(st.one_of(st.floats(allow_nan=False), st.integers(min_value=2**53)))
def test_canonical_json_refuses_floats_and_huge_ints(value):
    try:
        encode_canonical_json({"v": value})
    except CanonicalJsonError:
        return
    raise AssertionError("accepted a value canonical JSON cannot carry")


def test_canonical_json_spec_examples():
    assert encode_canonical_json({"one": 1, "two": "Two"}) == b'{"one":1,"two":"Two"}'
    assert encode_canonical_json({"b": "2", "a": "1"}) == b'{"a":"1","b":"2"}'
    assert encode_canonical_json({"a": "\u65e5\u672c\u8a9e"}) == '{"a":"日本語"}'.encode()
    assert encode_canonical_json({"a": "\u0000"}) == b'{"a":"\\u0000"}'


def _minimal_event():
    return {
        "room_id": "!x:domain", "sender": "@a:domain", "origin": "domain",
        "origin_server_ts": 1000000, "signatures": {}, "hashes": {}, "type": "X",
        "content": {}, "prev_events": [], "auth_events": [], "depth": 3,
        "unsigned": {"age_ts": 1000000},
    }


def test_spec_event_signing_vector_minimal_event():
    pdu = _minimal_event()
    add_content_hash(pdu)
    assert pdu["hashes"] == {"sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"}
    pdu["signatures"] = {}
    sign_event(pdu, V10, "domain", KEY)
    assert pdu["signatures"]["domain"]["ed25519:1"] == (
        "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"
    )
    assert verify_event_signature(pdu, V10, "domain", get_verify_key(KEY))


def test_spec_event_signing_vector_redactable_content():
    pdu = {
        "content": {"body": "Here is the message content"}, "event_id": "$0:domain",
        "origin": "domain", "origin_server_ts": 1000000, "type": "m.room.message",
        "room_id": "!r:domain", "sender": "@u:domain", "signatures": {},
        "unsigned": {"age_ts": 1000000},
    }
    add_content_hash(pdu)
    assert pdu["hashes"]["sha256"] == "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"
    pdu["signatures"] = {}
    sign_event(pdu, V10, "domain", KEY)
    assert pdu["signatures"]["domain"]["ed25519:1"] == (
        "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"
    )


message_content = st.dictionaries(st.text(min_size=1, max_size=10), json_leaf, max_size=5)


@settings(max_examples=200, deadline=None)
@given(message_content, st.sampled_from([V10, V11, V12]))
def test_tampering_breaks_hash_and_signature_but_redaction_keeps_id(content, rv):
    pdu = _minimal_event()
    pdu.pop("origin")
    pdu["type"] = "m.room.message"
    pdu["content"] = content
    add_content_hash(pdu)
    pdu["signatures"] = {}
    sign_event(pdu, rv, "domain", KEY)
    event_id = compute_event_id(pdu, rv)
    assert event_id.startswith("$") and "=" not in event_id and "+" not in event_id
    assert check_content_hash(pdu)
    # The reference hash (event id) and signature cover only the redacted form,
    # so redacting an event keeps its id and its signature valid.
    redacted = prune_event_dict(pdu, rv)
    assert compute_event_id(redacted, rv) == event_id
    assert verify_event_signature(redacted, rv, "domain", get_verify_key(KEY))
    tampered = copy.deepcopy(pdu)
    tampered["content"] = {**content, "extra-key": "x"}
    assert not check_content_hash(tampered)
    tampered_sender = copy.deepcopy(pdu)
    tampered_sender["sender"] = "@b:domain"
    assert not verify_event_signature(tampered_sender, rv, "domain", get_verify_key(KEY))
    assert compute_event_id(tampered_sender, rv) != event_id


def test_v11_redaction_keeps_create_content_and_redacts_key():
    create = {"type": "m.room.create", "content": {"room_version": "11", "m.federate": False},
              "origin": "x", "membership": "join"}
    assert prune_event_dict(create, V11)["content"] == create["content"]
    assert "origin" not in prune_event_dict(create, V11)
    assert prune_event_dict(create, V10)["content"] == {}
    assert "origin" in prune_event_dict(create, V10)
    redaction = {"type": "m.room.redaction", "content": {"redacts": "$a", "reason": "spam"}}
    assert prune_event_dict(redaction, V11)["content"] == {"redacts": "$a"}
    assert prune_event_dict(redaction, V10)["content"] == {}
    pl = {"type": "m.room.power_levels", "content": {"invite": 5, "ban": 50, "notifications": {}}}
    assert prune_event_dict(pl, V11)["content"] == {"invite": 5, "ban": 50}
    assert prune_event_dict(pl, V10)["content"] == {"ban": 50}
