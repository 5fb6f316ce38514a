"""Every stored event, in rooms of every room version, is well-formed: its content hash,
event id (reference hash, or the carried id in v1/v2) and signature verify, it passes
the auth rules against the stored state before it, its auth_events are the right ones
(v1/v2: with the cited events' reference hashes), and its state group is the state
after it."""
from __future__ import annotations

import json
import urllib.parse

import psycopg2
import pytest
from signedjson.key import decode_signing_key_base64, get_verify_key

from homeserver import auth_rules
from homeserver.event import Event
from homeserver.canonical_json import unpadded_b64
from homeserver.event_hashing import (
    check_content_hash,
    compute_event_id,
    compute_reference_hash,
    verify_event_signature,
)
from homeserver.room_versions import KNOWN_ROOM_VERSIONS
from storage.state import get_state_group_map
from tests.server_harness import Http

V3 = "/_matrix/client/v3"


def _q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


def _ok(result):
    status, body = result
    assert status == 200, body
    return body


def _build_room(server, unique, version: str) -> dict:
    """A room with varied activity; returns what the checks need to know about it."""
    alice = Http(server.base_url).register(unique("alice"))
    bob = Http(server.base_url).register(unique("bob"))
    carol = Http(server.base_url).register(unique("carol"))
    a = Http(server.base_url, alice["access_token"])
    b = Http(server.base_url, bob["access_token"])
    c = Http(server.base_url, carol["access_token"])
    room = _ok(a.request("POST", f"{V3}/createRoom", {
        "room_version": version, "preset": "public_chat", "name": f"integrity v{version}",
        "topic": "checking every event", "invite": [bob["user_id"]],
        "room_alias_name": unique("integrity"),
        "initial_state": [{"type": "com.example.initial", "state_key": "x",
                           "content": {"n": 1, "nested": {"list": [1, "two", None, True]}}}],
    }))
    rid = _q(room["room_id"])
    _ok(b.request("POST", f"{V3}/join/{rid}", {}))
    _ok(c.request("POST", f"{V3}/rooms/{rid}/join", {"reason": "hello"}))
    pl = _ok(a.request("GET", f"{V3}/rooms/{rid}/state/m.room.power_levels"))
    pl.setdefault("users", {})[bob["user_id"]] = 50
    _ok(a.request("PUT", f"{V3}/rooms/{rid}/state/m.room.power_levels", pl))
    _ok(b.request("PUT", f"{V3}/rooms/{rid}/state/com.example.custom/k1",
                  {"value": "é ü 中文 \u2028", "num": -12345}))
    _ok(b.request("PUT", f"{V3}/rooms/{rid}/state/com.example.custom/k1", {"value": "changed"}))
    _ok(a.request("PUT", f"{V3}/rooms/{rid}/state/m.room.name", {"name": "renamed"}))
    sent = []
    for i, who in enumerate([a, b, c, a, c]):
        sent.append(_ok(who.request("PUT", f"{V3}/rooms/{rid}/send/m.room.message/m{i}",
                                    {"msgtype": "m.text", "body": f"message {i}",
                                     "format": "org.matrix.custom.html",
                                     "formatted_body": f"<b>message {i}</b>"}))["event_id"])
    # A moderator redacts someone else's message; alice redacts her own.
    redaction1 = _ok(b.request("PUT", f"{V3}/rooms/{rid}/redact/{_q(sent[2])}/r1",
                               {"reason": "spam"}))["event_id"]
    redaction2 = _ok(a.request("PUT", f"{V3}/rooms/{rid}/redact/{_q(sent[0])}/r2", {}))["event_id"]
    _ok(a.request("POST", f"{V3}/rooms/{rid}/kick",
                  {"user_id": carol["user_id"], "reason": "bye"}))
    _ok(a.request("POST", f"{V3}/rooms/{rid}/ban", {"user_id": carol["user_id"]}))
    _ok(a.request("POST", f"{V3}/rooms/{rid}/unban", {"user_id": carol["user_id"]}))
    _ok(b.request("POST", f"{V3}/rooms/{rid}/leave", {}))
    _ok(a.request("PUT", f"{V3}/rooms/{rid}/send/m.room.message/last",
                  {"msgtype": "m.text", "body": "last"}))
    # The redacted events are served redacted.
    for target in (sent[2], sent[0]):
        ev = _ok(a.request("GET", f"{V3}/rooms/{rid}/event/{_q(target)}"))
        assert "body" not in ev["content"], ev
    return {"room_id": room["room_id"], "version": version,
            "redacted": {sent[2]: redaction1, sent[0]: redaction2}}


@pytest.fixture(scope="module")
def rooms(server, unique):
    return [_build_room(server, unique, v) for v in KNOWN_ROOM_VERSIONS]


@pytest.fixture(scope="module")
def unique():  # module-scoped twin of conftest's `unique`
    import itertools
    import uuid
    counter = itertools.count()
    return lambda prefix="u": f"{prefix}{next(counter)}i{uuid.uuid4().hex[:6]}"


def _verify_key(server):
    parts = (server.data_dir / "signing.key").read_text().split()
    assert parts[0] == "ed25519" and len(parts) == 3
    return get_verify_key(decode_signing_key_base64(parts[0], parts[1], parts[2]))


def _load(server):
    conn = psycopg2.connect(server.dsn())
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT room_id, room_version FROM rooms")
            versions = dict(cur.fetchall())
            cur.execute("SELECT event_id, room_id, type, state_key, sender, depth, state_group,"
                        " redacts, redacted_by, json FROM events ORDER BY stream_ordering")
            rows = cur.fetchall()
            cur.execute("SELECT event_id, prev_event_id FROM event_edges")
            edges: dict[str, set[str]] = {}
            for eid, prev in cur.fetchall():
                edges.setdefault(eid, set()).add(prev)
            cur.execute("SELECT event_id, auth_id FROM event_auth")
            auths: dict[str, set[str]] = {}
            for eid, aid in cur.fetchall():
                auths.setdefault(eid, set()).add(aid)
            groups = {g: get_state_group_map(cur, g) for g in {r[6] for r in rows}}
            cur.execute("SELECT room_id, type, state_key, event_id FROM current_state")
            current = {(r, t, sk): e for r, t, sk, e in cur.fetchall()}
    finally:
        conn.close()
    return versions, rows, edges, auths, groups, current


def test_every_stored_event_is_valid(server, rooms):
    verify_key = _verify_key(server)
    versions, rows, edges, auths, groups, current = _load(server)
    assert rows
    events: dict[str, Event] = {}
    row_of: dict[str, tuple] = {}
    for row in rows:
        event_id, room_id, etype, state_key, sender, depth, group, redacts, redacted_by, js = row
        rv = KNOWN_ROOM_VERSIONS[versions[room_id]]
        pdu = json.loads(js)
        ev = Event(event_id, rv, pdu)
        events[event_id] = ev
        row_of[event_id] = row
        where = f"{event_id} ({etype} in {room_id}, v{rv.identifier})"

        # Columns agree with the signed JSON; only v1/v2 PDUs carry their id.
        assert pdu.get("event_id") == (None if rv.event_ids_are_hashes else event_id), where
        assert ev.room_id == room_id, where
        assert (ev.type, ev.state_key, ev.sender, ev.depth) == (etype, state_key, sender, depth), where
        assert ev.redacts == redacts, where
        assert set(ev.prev_event_ids) == edges.get(event_id, set()), where
        assert set(ev.auth_event_ids) == auths.get(event_id, set()), where

        # Hashes, id and signature.
        assert check_content_hash(pdu), f"content hash of {where}"
        assert compute_event_id(pdu, rv) == event_id, f"event id of {where}"
        assert verify_event_signature(pdu, rv, server.server_name, verify_key), f"signature of {where}"
        assert len(pdu["signatures"][server.server_name]) == 1, where
        auth_rules.check_pdu_limits(pdu, rv)

        # Authorisation against the stored state before the event.
        if etype == "m.room.create":
            assert ev.prev_event_ids == [] and ev.auth_event_ids == [] and depth == 1, where
            state_before: dict = {}
            auth_rules.check_auth(ev, {ev.key: ev})
        else:
            assert len(ev.prev_event_ids) == 1, f"{where} has prev_events {ev.prev_event_ids}"
            prev_id = ev.prev_event_ids[0]
            assert prev_id in row_of, f"{where}: prev event {prev_id} not stored before it"
            prev_row = row_of[prev_id]
            assert prev_row[1] == room_id, where
            assert depth == prev_row[5] + 1, where
            ids_before = groups[prev_row[6]]
            state_before = {k: events[eid] for k, eid in ids_before.items()}
            try:
                auth_rules.check_auth(ev, state_before)
            except auth_rules.AuthError as e:
                raise AssertionError(f"auth rules reject stored {where}: {e}") from None
            auth_events = []
            for aid in ev.auth_event_ids:
                assert aid in events, f"{where}: auth event {aid} not stored before it"
                auth_events.append(events[aid])
            if not rv.event_ids_are_hashes:
                # v1/v2 cite prev and auth events as [id, {"sha256": reference hash}].
                for cited_id, hashes in pdu["prev_events"] + pdu["auth_events"]:
                    expected = unpadded_b64(compute_reference_hash(events[cited_id].pdu, rv))
                    assert hashes == {"sha256": expected}, where
            try:
                auth_rules.check_auth_events_list(ev, auth_events)
            except auth_rules.AuthError as e:
                raise AssertionError(f"auth events of {where} rejected: {e}") from None
            # The auth events are exactly the selected ones from the state before.
            wanted = auth_rules.auth_types_for_event(etype, sender, state_key, ev.content, rv)
            expected_auth = {ids_before[k] for k in wanted if k in ids_before}
            assert set(ev.auth_event_ids) == expected_auth, where
            # Checking against only the auth events (as a receiving server would) agrees.
            auth_state = {e.key: e for e in auth_events}
            if rv.room_id_from_create:
                auth_state[("m.room.create", "")] = state_before[("m.room.create", "")]
            auth_rules.check_auth(ev, auth_state)

        # The event's state group is the state after it.
        after = {k: e.event_id for k, e in state_before.items()}
        if ev.is_state():
            after[ev.key] = event_id
        assert groups[group] == after, f"state group of {where}"

    # Redaction bookkeeping: redacted_by names a stored redaction of that event in the
    # same room, and the stored json of a redacted event is the original.
    by_redaction = {eid: row_of[eid][8] for eid in row_of if row_of[eid][8]}
    for target, redaction in by_redaction.items():
        assert redaction in events, (target, redaction)
        assert events[redaction].redacts == target
        assert events[redaction].room_id == events[target].room_id
        assert check_content_hash(events[target].pdu)
    for room in rooms:
        for target, redaction in room["redacted"].items():
            assert by_redaction.get(target) == redaction
            assert events[redaction].redacts == target
            assert events[target].content.get("body"), "stored json lost the original content"

    # Current state is the state group of the room's newest event.
    newest: dict[str, str] = {}
    for row in rows:
        newest[row[1]] = row[0]
    expected_current = {(room_id, t, sk): eid for room_id, last in newest.items()
                        for (t, sk), eid in groups[row_of[last][6]].items()}
    assert current == expected_current

    # The rooms built here are all in the database, with all kinds of events.
    for room in rooms:
        assert versions[room["room_id"]] == room["version"]
        types = {r[2] for r in rows if r[1] == room["room_id"]}
        assert {"m.room.create", "m.room.member", "m.room.power_levels", "m.room.join_rules",
                "m.room.history_visibility", "m.room.name", "m.room.topic",
                "m.room.canonical_alias", "com.example.initial", "com.example.custom",
                "m.room.message", "m.room.redaction"} <= types, types
        memberships = [events[r[0]].membership for r in rows
                       if r[1] == room["room_id"] and r[2] == "m.room.member"]
        assert {"join", "invite", "leave", "ban"} <= set(memberships)


def test_v12_room_id_is_create_event_hash(server, rooms):
    room = next(r for r in rooms if r["version"] == "12")
    conn = psycopg2.connect(server.dsn())
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT event_id, json FROM events WHERE room_id = %s AND type = 'm.room.create'",
                        (room["room_id"],))
            (event_id, js), = cur.fetchall()
    finally:
        conn.close()
    assert room["room_id"] == "!" + event_id[1:]
    assert "room_id" not in json.loads(js)
