"""Canonical JSON, content/reference hashes, event ids and signatures, and the event
format and redaction algorithm of every room version: the spec's and Synapse's test
vectors plus hypothesis searching for counterexamples."""
import copy
import json

import canonicaljson
import pytest
from hypothesis import given, settings, strategies as st
from signedjson.key import decode_signing_key_base64, get_verify_key

from homeserver.canonical_json import (
    CanonicalJsonError,
    decode_unpadded_b64,
    encode_canonical_json,
    unpadded_b64,
)
from homeserver.event import Event
from homeserver.event_hashing import (
    add_content_hash,
    check_content_hash,
    compute_event_id,
    compute_reference_hash,
    event_reference,
    sign_event,
    verify_event_signature,
)
from homeserver.redaction import prune_event_dict
from homeserver.room_versions import (
    ALL_ROOM_VERSIONS,
    V1,
    V2,
    V3,
    V4,
    V5,
    V6,
    V7,
    V8,
    V9,
    V10,
    V11,
    V12,
)

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


def _spec_message_pdu() -> dict:
    """The message event of the spec's second event-signing vector, unsigned."""
    return {
        "content": {"body": "Here is the message content"}, "event_id": "$0:domain",
        "origin": "domain", "origin_server_ts": 1000000, "type": "m.room.message",
        "room_id": "!r:domain", "sender": "@u:domain", "signatures": {},
        "unsigned": {"age_ts": 1000000},
    }


def test_spec_event_signing_vector_redactable_content():
    pdu = _spec_message_pdu()
    add_content_hash(pdu)
    assert pdu["hashes"]["sha256"] == "onLKD1bGljeBWQhWZ1kaP9SorVmRQNdN5aM2JYU2n/g"
    pdu["signatures"] = {}
    sign_event(pdu, V10, "domain", KEY)
    assert pdu["signatures"]["domain"]["ed25519:1"] == (
        "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"
    )


message_content = st.dictionaries(st.text(min_size=1, max_size=10), json_leaf, max_size=5)


@settings(max_examples=200, deadline=None)
@given(message_content, st.sampled_from([v for v in ALL_ROOM_VERSIONS if v.event_ids_are_hashes]))
def test_tampering_breaks_hash_and_signature_but_redaction_keeps_id(content, rv):
    pdu = _minimal_event()
    pdu.pop("origin")
    pdu["type"] = "m.room.message"
    pdu["content"] = content
    add_content_hash(pdu)
    pdu["signatures"] = {}
    sign_event(pdu, rv, "domain", KEY)
    event_id = compute_event_id(pdu, rv)
    assert event_id.startswith("$") and "=" not in event_id
    assert not set(event_id) & (set("+/") if rv.urlsafe_event_ids else set("-_"))
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


# --------------------------------------------------------------------------
# Every room version's event format
# --------------------------------------------------------------------------

def test_spec_redactable_vector_is_a_v1_event():
    # The spec's second event-signing vector carries "$0:domain": a v1/v2-format event.
    pdu = _spec_message_pdu()
    add_content_hash(pdu)
    sign_event(pdu, V1, "domain", KEY)
    assert pdu["signatures"]["domain"]["ed25519:1"] == (
        "Wm+VzmOUOz08Ds+0NTWb1d4CZrVsJSikkeRxh6aCcUwu6pNC78FunoD7KNWzqFn241eYHYMGCA5McEiVPdhzBA"
    )
    assert compute_event_id(pdu, V1) == "$0:domain"  # v1/v2: the id is carried, not hashed


@pytest.mark.parametrize("pdu,content_hash,signature", [
    # Synapse's tests/crypto/test_event_signing.py vectors (room version 1).
    ({"event_id": "$0:domain", "origin_server_ts": 1000000, "signatures": {}, "type": "X",
      "content": {}, "unsigned": {"age_ts": 1000000}},
     "mq4QfPPpC+QsBd6eqfVsmJIEz8uvMSVK0+AU67PLESk",
     "18rGIkd4JJXxw9m+1j3BtN+TmqmLip4VHvFbyXLngpBLXOqbxlQViQABRzep2cODQ2aa5FnFgz+Llt2P03WiAw"),
    ({"content": {"body": "Here is the message content"}, "event_id": "$0:domain",
      "origin_server_ts": 1000000, "type": "m.room.message", "room_id": "!r:domain",
      "sender": "@u:domain", "signatures": {}, "unsigned": {"age_ts": 1000000}},
     "rDCeYBepPlI891h/RkI2/Lkf9bt7u0TxFku4tMs7WKk",
     "Ay4aj2b5oJ1k8INYZ9n3KnszCflM0emwcmQQ7vxpbdcSv9bkJxIZdWX1IJllcZLq89+D3sSabE+vqPtZs9akDw"),
])
def test_synapse_v1_signing_vectors(pdu, content_hash, signature):
    pdu = copy.deepcopy(pdu)
    add_content_hash(pdu)
    assert pdu["hashes"]["sha256"] == content_hash
    sign_event(pdu, V1, "domain", KEY)
    assert pdu["signatures"]["domain"]["ed25519:1"] == signature
    assert verify_event_signature(pdu, V2, "domain", get_verify_key(KEY))


# A real event as Synapse stored it, with the ids Synapse computes for it (the
# reference hash of its redacted form; standard base64 in v3, URL-safe from v4).
SYNAPSE_EVENT = {
    "auth_events": ["$gbHO7IPUHybc7ULFnT7P0r3iWlZFHGmr6zBfEYCUyKw",
                    "$hy1eZFYcgNxMFNNBgCD5fyOzyWRcBkxfNcrUI5ZpZlE",
                    "$Nt_z68EwFfPqBeHjzEHGsp461Z4EfNEzR-KH5bOYdOY"],
    "prev_events": ["$4FbpZrgPQTwoLD9H5y7jcikucCypUOn78mXhQX7WliY"],
    "type": "m.room.message", "room_id": "!DHmIIVvxFASSFgDGzr:localhost:8008",
    "sender": "@tester_b:localhost:8008",
    "content": {"msgtype": "m.text", "body": "invited people can see history", "m.mentions": {}},
    "depth": 24, "origin": "localhost:8008", "origin_server_ts": 1731769874137,
    "hashes": {"sha256": "FoYV1w3TW/B2mVT0gX2/BZKpCwrrvGXqXFdUhN9LZYU"},
    "signatures": {"localhost:8008": {"ed25519:a_phSE": (
        "G8cfk/m97sndxMNrEZ2nMMSXkVeJE05G7if4JiVzAwGfD3TwnF/jfSHt2acWrpNqv/aEhZug3WLofc2id+rVBw")}},
    "unsigned": {"age_ts": 1731769874137},
}


def test_event_id_encoding_per_version():
    v4_plus = "$zRz9jjiT9wZc3Hl9ij_74aCmTjqV3YMlj9sj3Uqxg6o"
    for rv in (V4, V5, V6, V7, V8, V9, V10):
        assert compute_event_id(SYNAPSE_EVENT, rv) == v4_plus
        assert compute_event_id(prune_event_dict(SYNAPSE_EVENT, rv), rv) == v4_plus
    assert compute_event_id(SYNAPSE_EVENT, V3) == "$zRz9jjiT9wZc3Hl9ij/74aCmTjqV3YMlj9sj3Uqxg6o"
    # v11 no longer keeps `origin` through redaction, so the same JSON hashes differently.
    assert compute_event_id(SYNAPSE_EVENT, V11) != v4_plus
    # v1/v2 carry their id: a PDU without one has none to compute.
    with pytest.raises(ValueError):
        compute_event_id(SYNAPSE_EVENT, V2)


@settings(max_examples=100, deadline=None)
@given(message_content)
def test_v3_and_v4_ids_are_one_hash_in_two_alphabets(content):
    pdu = {**_minimal_event(), "type": "m.room.message", "content": content}
    add_content_hash(pdu)
    v3, v4 = compute_event_id(pdu, V3), compute_event_id(pdu, V4)
    assert not set(v3) & set("-_") and not set(v4) & set("+/")
    assert decode_unpadded_b64(v3[1:]) == decode_unpadded_b64(v4[1:]) == compute_reference_hash(pdu, V4)
    assert v3.translate(str.maketrans("+/", "-_")) == v4


def test_v1_v2_references_are_id_and_reference_hash_pairs():
    pdu = {**_minimal_event(), "event_id": "$abc:domain", "prev_events": [["$p:domain", {}]],
           "auth_events": [["$a:domain", {"sha256": "x"}], "junk", []]}
    event = Event("$abc:domain", V1, pdu)
    assert event.prev_event_ids == ["$p:domain"]
    assert event.auth_event_ids == ["$a:domain"]  # malformed entries are skipped
    ref = event_reference(event)
    assert ref == ["$abc:domain", {"sha256": unpadded_b64(compute_reference_hash(pdu, V1))}]
    v3_event = Event("$h", V3, {**_minimal_event(), "prev_events": ["$p"], "auth_events": ["$a"]})
    assert event_reference(v3_event) == "$h" and v3_event.prev_event_ids == ["$p"]


def test_v12_auth_parents_include_the_create_event_named_by_the_room_id():
    message = Event("$m", V12, {"type": "m.room.message", "room_id": "!createhash",
                                "auth_events": ["$pl"], "prev_events": []})
    assert message.auth_event_ids == ["$pl"]
    assert message.auth_parent_ids == ["$pl", "$createhash"]
    create = Event("$createhash", V12, {"type": "m.room.create", "auth_events": []})
    assert create.auth_parent_ids == []
    assert Event("$m", V11, message.pdu).auth_parent_ids == ["$pl"]


# What survives redaction, per version: (event, {version: expected content}).
# Re-expressed from the spec's redaction algorithms (and Synapse's prune tests).
_TPI = {"display_name": "alice", "signed": {"mxid": "@alice:example.org", "token": "abc123",
                                            "signatures": {"magic.forest": {"ed25519:3": "sig"}}}}
REDACTION_CASES = [
    ({"type": "m.room.aliases", "content": {"aliases": ["#a:x"], "other": 1}},
     {V1: {"aliases": ["#a:x"]}, V5: {"aliases": ["#a:x"]}, V6: {}, V11: {}}),
    ({"type": "m.room.join_rules", "content": {"join_rule": "invite", "allow": [], "x": 1}},
     {V1: {"join_rule": "invite"}, V7: {"join_rule": "invite"},
      V8: {"join_rule": "invite", "allow": []}, V12: {"join_rule": "invite", "allow": []}}),
    ({"type": "m.room.member",
      "content": {"membership": "join", "join_authorised_via_users_server": "@u:x", "x": 1}},
     {V1: {"membership": "join"}, V8: {"membership": "join"},
      V9: {"membership": "join", "join_authorised_via_users_server": "@u:x"},
      V11: {"membership": "join", "join_authorised_via_users_server": "@u:x"}}),
    ({"type": "m.room.member", "content": {"membership": "invite", "third_party_invite": _TPI}},
     {V10: {"membership": "invite"},
      V11: {"membership": "invite", "third_party_invite": {"signed": _TPI["signed"]}}}),
    ({"type": "m.room.member", "content": {"membership": "invite", "third_party_invite": {}}},
     {V10: {"membership": "invite"}, V11: {"membership": "invite", "third_party_invite": {}}}),
    ({"type": "m.room.member", "content": {"membership": "invite", "third_party_invite": "x"}},
     {V11: {"membership": "invite"}}),
    ({"type": "m.room.create", "content": {"creator": "@u:x", "room_version": "1", "other": 1}},
     {V1: {"creator": "@u:x"}, V10: {"creator": "@u:x"},
      V11: {"creator": "@u:x", "room_version": "1", "other": 1}}),
    ({"type": "m.room.power_levels", "content": {"ban": 1, "invite": 3, "notifications": {}}},
     {V1: {"ban": 1}, V10: {"ban": 1}, V11: {"ban": 1, "invite": 3}}),
    ({"type": "m.room.redaction", "content": {"redacts": "$x", "reason": "r"}, "redacts": "$x"},
     {V1: {}, V10: {}, V11: {"redacts": "$x"}}),
    ({"type": "m.room.history_visibility", "content": {"history_visibility": "shared", "x": 1}},
     {V1: {"history_visibility": "shared"}, V12: {"history_visibility": "shared"}}),
]


@pytest.mark.parametrize("event,expected", REDACTION_CASES,
                         ids=[f"{e['type']}-{i}" for i, (e, _) in enumerate(REDACTION_CASES)])
def test_redaction_algorithm_per_version(event, expected):
    for rv, content in expected.items():
        assert prune_event_dict(event, rv)["content"] == content, rv.identifier


def test_redaction_top_level_keys_v1_to_v10_and_v11():
    pdu = {"event_id": "$e:x", "type": "A", "room_id": "!r:x", "sender": "@u:x", "state_key": "",
           "content": {"a": 1}, "hashes": {}, "signatures": {}, "depth": 4, "prev_events": [],
           "prev_state": [], "auth_events": [], "origin": "x", "origin_server_ts": 1,
           "membership": "join", "redacts": "$y", "unsigned": {"age": 1}, "other": 1}
    legacy = set(pdu) - {"redacts", "unsigned", "other"}
    for rv in (V1, V2, V3, V6, V10):
        assert set(prune_event_dict(pdu, rv)) == legacy
    for rv in (V11, V12):
        assert set(prune_event_dict(pdu, rv)) == legacy - {"origin", "membership", "prev_state"}
