"""Reporting events, rooms and users: reports land in PostgreSQL (read back here with
psycopg2 and with storage.reports.list_reports); what the reporter cannot see, what does
not exist and what belongs to another tenant all answer 404 alike and store nothing;
bad input is a 400."""
from __future__ import annotations

import psycopg2
import pytest

from storage.reports import list_reports
from tests.tenant_world import V3, create_room, put_state, running_world

SERVER = "test.local"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with running_world(tmp_path_factory.mktemp("reports")) as w:
        users = {n: w.user(n, "acme") for n in ("alice", "carol", "dave", "erin")}
        users["bob"] = w.user("bob", "globex")
        alice, carol = users["alice"], users["carol"]
        room = create_room(alice, preset="public_chat", name="Shop floor")
        assert carol.request("POST", f"{V3}/rooms/{room}/join", {})[0] == 200
        status, sent = carol.request("PUT", f"{V3}/rooms/{room}/send/m.room.message/m1",
                                     {"msgtype": "m.text", "body": "buy cheap watches"})
        assert status == 200
        yield w, users, room, sent["event_id"]


def _rows(w, where: str = "TRUE", args: tuple = ()) -> list[tuple]:
    with psycopg2.connect(w.srv.dsn()) as conn, conn.cursor() as cur:
        cur.execute("SELECT kind, reporter, room_id, event_id, target_user_id, reason, score"
                    f" FROM content_reports WHERE {where} ORDER BY id", args)
        return cur.fetchall()


def _count(w) -> int:
    with psycopg2.connect(w.srv.dsn()) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM content_reports")
        return cur.fetchone()[0]


def test_event_report_is_stored(world):
    w, u, room, event_id = world
    alice, carol = u["alice"], u["carol"]
    status, body = alice.request("POST", f"{V3}/rooms/{room}/report/{event_id}",
                                 {"reason": "spam", "score": -100})
    assert (status, body) == (200, {})
    assert _rows(w, "reporter = %s AND event_id = %s", (alice.user_id, event_id)) == [
        ("event", alice.user_id, room, event_id, carol.user_id, "spam", -100)]
    # reason and score are optional, and so is the body.
    assert carol.request("POST", f"{V3}/rooms/{room}/report/{event_id}", raw=b"")[0] == 200
    assert _rows(w, "reporter = %s", (carol.user_id,)) == [
        ("event", carol.user_id, room, event_id, carol.user_id, None, None)]


def test_event_reports_reveal_nothing(world):
    w, u, room, event_id = world
    alice, dave, erin, bob = u["alice"], u["dave"], u["erin"], u["bob"]
    missing = alice.request("POST", f"{V3}/rooms/{room}/report/$missing", {"reason": "x"})
    assert missing[0] == 404 and missing[1]["errcode"] == "M_NOT_FOUND"
    before = _count(w)
    # Not joined (erin, of the same tenant), another tenant (bob), another room's event,
    # an unknown room, odd ids: all answered like a missing event.
    other_room = create_room(alice)
    cases = [(erin, room, event_id), (bob, room, event_id), (alice, other_room, event_id),
             (alice, "!missing:test.local", event_id), (alice, room, "not-an-event"),
             (alice, "%00", event_id), (alice, room, "%24%00")]
    for user, room_id, ev in cases:
        assert user.request("POST", f"{V3}/rooms/{room_id}/report/{ev}", {"reason": "x"}) == missing
    # History visibility: dave joins a "joined"-only room after a message he never saw.
    private = create_room(alice, preset="public_chat", initial_state=[
        {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}])
    _, early = alice.request("PUT", f"{V3}/rooms/{private}/send/m.room.message/e1",
                             {"msgtype": "m.text", "body": "before dave"})
    assert dave.request("POST", f"{V3}/rooms/{private}/join", {})[0] == 200
    _, late = alice.request("PUT", f"{V3}/rooms/{private}/send/m.room.message/e2",
                            {"msgtype": "m.text", "body": "after dave"})
    assert dave.request("POST", f"{V3}/rooms/{private}/report/{early['event_id']}", {"reason": "x"}) == missing
    assert _count(w) == before
    assert dave.request("POST", f"{V3}/rooms/{private}/report/{late['event_id']}", {"reason": "x"})[0] == 200
    assert _count(w) == before + 1


def test_room_and_user_reports(world):
    w, u, room, _ = world
    alice, carol, erin, bob = u["alice"], u["carol"], u["erin"], u["bob"]
    # A room report needs no membership; the reason may be blank but must be there.
    assert erin.request("POST", f"{V3}/rooms/{room}/report", {"reason": ""}) == (200, {})
    assert _rows(w, "kind = 'room' AND reporter = %s", (erin.user_id,)) == [
        ("room", erin.user_id, room, None, None, "", None)]
    missing_room = erin.request("POST", f"{V3}/rooms/!missing:test.local/report", {"reason": "x"})
    assert missing_room[0] == 404 and missing_room[1]["errcode"] == "M_NOT_FOUND"
    assert bob.request("POST", f"{V3}/rooms/{room}/report", {"reason": "x"}) == missing_room
    assert erin.request("POST", f"{V3}/rooms/not-a-room/report", {"reason": "x"}) == missing_room
    # A user report: of the reporter's tenant only.
    assert alice.request("POST", f"{V3}/users/{carol.user_id}/report", {"reason": "rude"}) == (200, {})
    assert _rows(w, "kind = 'user'") == [("user", alice.user_id, None, None, carol.user_id, "rude", None)]
    missing_user = bob.request("POST", f"{V3}/users/@nobody:{SERVER}/report", {"reason": "x"})
    assert missing_user[0] == 404 and missing_user[1]["errcode"] == "M_NOT_FOUND"
    assert bob.request("POST", f"{V3}/users/{alice.user_id}/report", {"reason": "x"}) == missing_user
    assert bob.request("POST", f"{V3}/users/not-a-user/report", {"reason": "x"}) == missing_user
    assert len(_rows(w, "kind = 'user'")) == 1


@pytest.mark.parametrize("path,body,raw,errcode", [
    ("room", {}, None, "M_MISSING_PARAM"),
    ("room", {"reason": 5}, None, "M_BAD_JSON"),
    ("room", None, b"{", "M_NOT_JSON"),
    ("room", None, b"", "M_NOT_JSON"),
    ("user", {}, None, "M_MISSING_PARAM"),
    ("user", {"reason": ["x"]}, None, "M_BAD_JSON"),
    ("event", {"score": "bad"}, None, "M_BAD_JSON"),
    ("event", {"score": 5}, None, "M_INVALID_PARAM"),
    ("event", {"score": -101}, None, "M_INVALID_PARAM"),
    ("event", {"score": True}, None, "M_BAD_JSON"),
    ("event", {"reason": "x" * 10_001}, None, "M_INVALID_PARAM"),
    ("event", {"reason": "a\u0000b"}, None, "M_INVALID_PARAM"),
    ("event", None, b"[]", "M_BAD_JSON"),
])
def test_bad_input(world, path, body, raw, errcode):
    w, u, room, event_id = world
    target = {"room": f"/rooms/{room}/report", "user": f"/users/{u['carol'].user_id}/report",
              "event": f"/rooms/{room}/report/{event_id}"}[path]
    before = _count(w)
    status, answer = u["alice"].request("POST", V3 + target, body, raw=raw)
    assert status == 400 and answer["errcode"] == errcode, answer
    assert _count(w) == before


def test_list_reports_for_moderators(world):
    w, u, room, event_id = world
    alice = u["alice"]
    other = create_room(alice)
    put_state(alice, other, "m.room.topic", {"topic": "x"})
    assert alice.request("POST", f"{V3}/rooms/{other}/report", {"reason": "first"})[0] == 200
    assert alice.request("POST", f"{V3}/rooms/{other}/report", {"reason": "second"})[0] == 200
    with psycopg2.connect(w.srv.dsn()) as conn, conn.cursor() as cur:
        in_room = list_reports(cur, room_id=other)
        assert [(r.kind, r.reason) for r in in_room] == [("room", "first"), ("room", "second")]
        everything = list_reports(cur)
        assert [r.id for r in everything] == sorted(r.id for r in everything)
        assert {r.id for r in in_room} <= {r.id for r in everything}
        assert list_reports(cur, after_id=in_room[0].id, room_id=other) == in_room[1:]
        assert len(list_reports(cur, limit=1)) == 1
