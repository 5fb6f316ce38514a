"""Purge history, delete room (v2, with a new room for the members) and deactivate with
erase: each leaves PostgreSQL in the documented state (checked in SQL), disturbs nothing
else, and keeps what the running server serves from memory (room heads, event cache,
recent-timeline cache, the sync engine's room lists) in step with it."""
from __future__ import annotations

import json
import time

import psycopg2
import pytest

from tests.tenant_world import V3, create_room, put_state, running_world, sync

SERVER = "test.local"
A1, A2 = "/_synapse/admin/v1", "/_synapse/admin/v2"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with running_world(tmp_path_factory.mktemp("purge")) as w:
        users = {n: w.user(n, None) for n in ("alice", "carol", "eve")}
        yield w, users


def _sql(w, query: str, args: tuple = ()) -> list[tuple]:
    with psycopg2.connect(w.srv.dsn()) as conn, conn.cursor() as cur:
        cur.execute(query, args)
        return cur.fetchall()


def _send(user, room: str, body: str) -> str:
    status, sent = user.request("PUT", f"{V3}/rooms/{room}/send/m.room.message/{body.replace(' ', '-')}{time.time()}",
                                {"msgtype": "m.text", "body": body})
    assert status == 200, sent
    return sent["event_id"]


def _search(user, term: str) -> set[str]:
    status, body = user.request("POST", f"{V3}/search", {"search_categories": {"room_events": {
        "search_term": term}}})
    assert status == 200, body
    return {r["result"]["event_id"] for r in body["search_categories"]["room_events"]["results"]}


def _wait_task(w, path: str) -> dict:
    deadline = time.time() + 30
    while time.time() < deadline:
        status, body = w.admin.request("GET", path)
        assert status == 200, body
        if body.get("status") in ("complete", "failed"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"{path} did not finish")


def _table_counts(w, room: str) -> dict[str, int]:
    return {t: _sql(w, f"SELECT count(*) FROM {t} WHERE room_id = %s", (room,))[0][0]
            for t in ("events", "current_state", "room_memberships", "state_groups", "forward_extremities")}


def test_purge_history_up_to_an_event(world):
    w, u = world
    alice, carol = u["alice"], u["carol"]
    room = create_room(alice, preset="public_chat")
    assert carol.request("POST", f"{V3}/rooms/{room}/join", {})[0] == 200
    topic = put_state(alice, room, "m.room.topic", {"topic": "secret plans"})
    old = [_send(alice, room, f"old {i}") for i in range(3)]
    _, redaction = alice.request("PUT", f"{V3}/rooms/{room}/redact/{topic}/r1", {"reason": "oops"})
    keep = [_send(alice, room, f"new {i}") for i in range(2)]
    other = create_room(alice)
    _send(alice, other, "elsewhere")
    other_before = _table_counts(w, other)
    state_before = _sql(w, "SELECT count(*) FROM events WHERE room_id = %s AND state_key IS NOT NULL", (room,))
    sync(carol)  # carol's timeline cache now holds the room's events
    assert carol.request("GET", f"{V3}/rooms/{room}/event/{old[0]}")[0] == 200

    # Without delete_local_events nothing of a local user goes (all senders are local).
    _, body = w.admin.request("POST", f"{A1}/purge_history/{room}/{keep[0]}", {})
    assert _wait_task(w, f"{A1}/purge_history_status/{body['purge_id']}") == {"status": "complete"}
    assert _sql(w, "SELECT count(*) FROM events WHERE event_id = ANY(%s)", (old,)) == [(3,)]

    status, body = w.admin.request("POST", f"{A1}/purge_history/{room}/{keep[0]}", {"delete_local_events": True})
    assert status == 200
    assert _wait_task(w, f"{A1}/purge_history_status/{body['purge_id']}") == {"status": "complete"}
    gone = old + [redaction["event_id"]]
    # SQL: the messages and the redaction before the cut are gone with their edges,
    # auth edges and transaction ids; state stays (the redacted topic pruned in place).
    for table in ("events", "event_edges", "event_auth", "event_txn_ids"):
        assert _sql(w, f"SELECT count(*) FROM {table} WHERE event_id = ANY(%s)", (gone,)) == [(0,)], table
    assert _sql(w, "SELECT count(*) FROM events WHERE room_id = %s AND state_key IS NOT NULL", (room,)) == state_before
    assert _sql(w, "SELECT count(*) FROM events WHERE event_id = ANY(%s)", (keep,)) == [(2,)]
    assert json.loads(_sql(w, "SELECT json FROM events WHERE event_id = %s", (topic,))[0][0])["content"] == {}
    assert _table_counts(w, other) == other_before
    # Memory: served as PostgreSQL now says.
    assert carol.request("GET", f"{V3}/rooms/{room}/event/{old[0]}")[0] == 404
    assert carol.request("GET", f"{V3}/rooms/{room}/state/m.room.topic")[1] == {}
    _, page = carol.request("GET", f"{V3}/rooms/{room}/messages?dir=b&limit=50")
    ids = [e["event_id"] for e in page["chunk"]]
    assert keep[1] in ids and keep[0] in ids and not set(gone) & set(ids)
    timeline = sync(carol)["rooms"]["join"][room]["timeline"]["events"]
    assert not set(gone) & {e["event_id"] for e in timeline}
    # The room goes on.
    assert _send(carol, room, "after the purge")


def test_purge_history_by_timestamp_and_bad_input(world):
    w, u = world
    alice = u["alice"]
    room = create_room(alice)
    first = [_send(alice, room, f"early {i}") for i in range(3)]
    time.sleep(0.05)
    cut = int(time.time() * 1000)
    time.sleep(0.05)
    later = _send(alice, room, "late")
    _, body = w.admin.request("POST", f"{A1}/purge_history/{room}",
                              {"purge_up_to_ts": cut, "delete_local_events": True})
    _wait_task(w, f"{A1}/purge_history_status/{body['purge_id']}")
    # As in Synapse, the last event before the timestamp stays; older ones go.
    assert sorted(_sql(w, "SELECT event_id FROM events WHERE event_id = ANY(%s)", (first + [later],))) == \
        sorted([(first[2],), (later,)])
    other = create_room(alice)
    other_event = _send(alice, other, "x")
    # An event of another room answers like a missing one (it may be another tenant's).
    assert w.admin.request("POST", f"{A1}/purge_history/{room}/{other_event}", {}) == (404, {
        "errcode": "M_NOT_FOUND", "error": f"Could not find event {other_event}"})
    assert w.admin.request("POST", f"{A1}/purge_history/{room}", {})[1]["errcode"] == "M_BAD_JSON"
    assert w.admin.request("POST", f"{A1}/purge_history/{room}", {"purge_up_to_ts": "x"})[1]["errcode"] == "M_BAD_JSON"
    assert w.admin.request("POST", f"{A1}/purge_history/{room}", {"purge_up_to_ts": 1})[0] == 404
    assert w.admin.request("GET", f"{A1}/purge_history_status/nope")[0] == 404


def test_delete_room_with_a_new_room_for_its_members(world):
    w, u = world
    alice, carol = u["alice"], u["carol"]
    room = create_room(alice, preset="public_chat", room_alias_name="doomed", visibility="public")
    assert carol.request("POST", f"{V3}/rooms/{room}/join", {})[0] == 200
    bad = _send(carol, room, "bad content")
    assert alice.request("POST", f"{V3}/rooms/{room}/report/{bad}", {"reason": "bad"})[0] == 200
    since = sync(alice)["next_batch"]
    other = create_room(alice)
    _send(alice, other, "unrelated")
    other_before = _table_counts(w, other)
    room_event_ids = [r[0] for r in _sql(w, "SELECT event_id FROM events WHERE room_id = %s", (room,))]

    status, body = w.admin.request("DELETE", f"{A2}/rooms/{room}", {
        "new_room_user_id": f"@admin:{SERVER}", "room_name": "Moved", "message": "This room was closed.",
        "block": True, "purge": True})
    assert status == 200
    done = _wait_task(w, f"{A2}/rooms/delete_status/{body['delete_id']}")
    assert done["status"] == "complete", done
    result = done["shutdown_room"]
    assert result["kicked_users"] == sorted([alice.user_id, carol.user_id])
    assert result["failed_to_kick_users"] == [] and result["local_aliases"] == [f"#doomed:{SERVER}"]
    new_room = result["new_room_id"]
    _, by_room = w.admin.request("GET", f"{A2}/rooms/{room}/delete_status")
    assert [r["delete_id"] for r in by_room["results"]] == [body["delete_id"]]

    # SQL: nothing of the room remains but the block and the report about it.
    assert all(n == 0 for n in _table_counts(w, room).values()), _table_counts(w, room)
    for table in ("rooms", "room_aliases"):
        assert _sql(w, f"SELECT count(*) FROM {table} WHERE room_id = %s", (room,)) == [(0,)], table
    for table in ("event_edges", "event_auth", "event_txn_ids"):
        assert _sql(w, f"SELECT count(*) FROM {table} WHERE event_id = ANY(%s)", (room_event_ids,)) == [(0,)], table
    assert _sql(w, "SELECT count(*) FROM state_group_entries WHERE event_id = ANY(%s)", (room_event_ids,)) == [(0,)]
    assert _sql(w, "SELECT user_id FROM blocked_rooms WHERE room_id = %s", (room,)) == [(f"@admin:{SERVER}",)]
    assert _sql(w, "SELECT count(*) FROM content_reports WHERE room_id = %s", (room,)) == [(1,)]
    assert _sql(w, "SELECT room_id FROM room_aliases WHERE room_alias = %s", (f"#doomed:{SERVER}",)) == [(new_room,)]
    assert _table_counts(w, other) == other_before

    # Memory: the room is gone for everyone; the members are in the new room.
    missing = w.admin.request("GET", f"{A1}/rooms/{room}")
    assert missing[0] == 404
    assert carol.request("POST", f"{V3}/rooms/{room}/join", {})[0] in (403, 404)
    assert alice.request("GET", f"{V3}/rooms/{room}/messages")[0] in (403, 404)
    after = sync(alice, since)
    assert room not in after["rooms"].get("join", {})
    assert new_room in sync(carol)["rooms"]["join"]
    assert room not in sync(carol)["rooms"].get("join", {})
    _, new_messages = carol.request("GET", f"{V3}/rooms/{new_room}/messages?dir=b&limit=20")
    assert "This room was closed." in [e["content"].get("body") for e in new_messages["chunk"]]
    # Moved members cannot speak there (users_default -10), as in Synapse.
    status, _ = carol.request("PUT", f"{V3}/rooms/{new_room}/send/m.room.message/h1", {"msgtype": "m.text", "body": "?"})
    assert status == 403


def test_deactivate_with_erase(world):
    w, u = world
    alice, eve = u["alice"], u["eve"]
    room = create_room(alice, preset="public_chat", power_level_content_override={"users": {eve.user_id: 50}})
    assert eve.request("POST", f"{V3}/rooms/{room}/join", {})[0] == 200
    topic = put_state(eve, room, "m.room.topic", {"topic": "eve's topic"})
    said = [_send(eve, room, f"eve says {i} quokka") for i in range(3)]
    status, edit = eve.request("PUT", f"{V3}/rooms/{room}/send/m.room.message/edit{time.time()}", {
        "msgtype": "m.text", "body": "* wombat", "m.new_content": {"msgtype": "m.text", "body": "wombat"},
        "m.relates_to": {"rel_type": "m.replace", "event_id": said[1]}})
    assert status == 200, edit
    alice_said = _send(alice, room, "alice says")
    sync(alice)  # cached timelines hold eve's words
    assert _search(alice, "quokka") == {said[0], said[2]}  # the edited one is found by its new text
    assert _search(alice, "wombat") == {said[1]}
    _, original = alice.request("GET", f"{V3}/rooms/{room}/event/{said[1]}")
    assert original["unsigned"]["m.relations"]["m.replace"]["content"]["m.new_content"]["body"] == "wombat"
    assert alice.request("GET", f"{V3}/rooms/{room}/event/{said[0]}")[1]["content"]["body"] == "eve says 0 quokka"

    status, body = w.admin.request("POST", f"{A1}/deactivate/{eve.user_id}", {"erase": True})
    assert (status, body) == (200, {"id_server_unbind_result": "no-support"})
    # SQL: erased, profile cleared, no devices or tokens, her messages pruned in place
    # (ids and signatures kept), the topic she set (current state) intact, others untouched.
    assert _sql(w, "SELECT deactivated, erased, displayname, avatar_url, password_hash FROM users"
                   " WHERE user_id = %s", (eve.user_id,)) == [(True, True, None, None, None)]
    assert _sql(w, "SELECT count(*) FROM devices WHERE user_id = %s", (eve.user_id,)) == [(0,)]
    assert _sql(w, "SELECT count(*) FROM access_tokens WHERE user_id = %s", (eve.user_id,)) == [(0,)]
    for event_id in said:
        pdu = json.loads(_sql(w, "SELECT json FROM events WHERE event_id = %s", (event_id,))[0][0])
        assert pdu["content"] == {} and "signatures" in pdu and "hashes" in pdu
    # Her words are gone from the search index (but the topic, which stays) and her edit
    # from the relations.
    assert _sql(w, "SELECT event_id FROM event_search WHERE sender = %s", (eve.user_id,)) == [(topic,)]
    assert _sql(w, "SELECT count(*) FROM event_relations WHERE sender = %s", (eve.user_id,)) == [(0,)]
    assert _search(alice, "quokka") == set() and _search(alice, "wombat") == set()
    assert json.loads(_sql(w, "SELECT json FROM events WHERE event_id = %s", (topic,))[0][0])["content"] == {
        "topic": "eve's topic"}
    assert json.loads(_sql(w, "SELECT json FROM events WHERE event_id = %s", (alice_said,))[0][0])["content"][
        "body"] == "alice says"
    assert _sql(w, "SELECT membership FROM current_state WHERE room_id = %s AND state_key = %s",
                (room, eve.user_id)) == [("leave",)]
    # Memory: every path serves the pruned form.
    assert alice.request("GET", f"{V3}/rooms/{room}/event/{said[0]}")[1]["content"] == {}
    _, page = alice.request("GET", f"{V3}/rooms/{room}/messages?dir=b&limit=50")
    bodies = {e["event_id"]: e["content"] for e in page["chunk"]}
    assert all(bodies[e] == {} for e in said) and bodies[alice_said]["body"] == "alice says"
    assert "m.relations" not in alice.request("GET", f"{V3}/rooms/{room}/event/{said[1]}")[1]["unsigned"]
    timeline = sync(alice)["rooms"]["join"][room]["timeline"]["events"]
    assert all(e["content"] == {} for e in timeline if e["event_id"] in said)
    assert eve.request("GET", f"{V3}/account/whoami")[0] == 401
    _, user = w.admin.request("GET", f"{A2}/users/{eve.user_id}")
    assert user["erased"] is True and user["deactivated"] is True
