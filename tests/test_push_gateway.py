"""Pushers delivering to a push gateway (the recording gateway of tests/push_gateway.py,
speaking the push-gateway API): a mention of an offline user arrives once with the right
counts; a user who is syncing gets no push; a read receipt sends a badge-only push; a
rejected pushkey removes the pusher; a gateway that is down receives the push once it is
back (PUSH_OUTAGE_SECONDS, default 60, shortens the outage)."""
from __future__ import annotations

import os
import threading
import time

import pytest

from tests.push_gateway import PushGateway
from tests.server_harness import Http, ServerProcess, free_port

V3 = "/_matrix/client/v3"
OUTAGE_S = float(os.environ.get("PUSH_OUTAGE_SECONDS", "60"))
CONFIG = ("push:\n  gateway_ip_range_whitelist: ['127.0.0.0/8']\n  retry_initial_ms: 200\n"
          "  retry_max_ms: 2000\n  synced_within_ms: 1000\n")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    gateway = PushGateway(free_port())
    gateway.start()
    srv = ServerProcess(tmp_path_factory.mktemp("push"), extra_config=CONFIG)
    srv.start()
    yield srv, gateway
    srv.stop()
    srv.stop_postgres()
    gateway.stop()


def _user(srv, unique, prefix="u") -> Http:
    reg = Http(srv.base_url).register(unique(prefix))
    h = Http(srv.base_url, reg["access_token"])
    h.user_id = reg["user_id"]
    return h


def _setup(srv, gateway_url: str, unique, pushkey: str, **data) -> tuple[Http, Http, str]:
    a, b = _user(srv, unique, "a"), _user(srv, unique, "b")
    status, room = a.request("POST", f"{V3}/createRoom", {"invite": [b.user_id], "name": "Sales"})
    assert status == 200, room
    assert b.request("POST", f"{V3}/rooms/{room['room_id']}/join", {})[0] == 200
    status, body = b.request("POST", f"{V3}/pushers/set", {
        "kind": "http", "app_id": "com.example.app", "pushkey": pushkey, "app_display_name": "App",
        "device_display_name": "Phone", "lang": "en", "data": {"url": gateway_url, **data}})
    assert status == 200, body
    return a, b, room["room_id"]


def _send(h: Http, room: str, txn: str, body: str, **content) -> str:
    status, resp = h.request("PUT", f"{V3}/rooms/{room}/send/m.room.message/{txn}",
                             {"msgtype": "m.text", "body": body, **content})
    assert status == 200, resp
    return resp["event_id"]


def test_mention_of_offline_user_is_pushed_once_with_counts(env, unique):
    srv, gw = env
    a, b, room = _setup(srv, gw.url, unique, "key-mention", custom="kept")
    c = _user(srv, unique, "c")  # three members: a plain message has no sound, so low priority
    assert a.request("POST", f"{V3}/rooms/{room}/invite", {"user_id": c.user_id})[0] == 200
    assert c.request("POST", f"{V3}/rooms/{room}/join", {})[0] == 200
    plain = _send(a, room, "t1", "lunch?")
    mention = _send(a, room, "t2", "ping", **{"m.mentions": {"user_ids": [b.user_id]}})
    gw.wait_for(lambda ns: any(n.get("event_id") == mention for n in ns))
    time.sleep(0.5)  # anything extra would have arrived by now
    [first] = gw.for_event(plain)
    [note] = gw.for_event(mention)
    assert note["room_id"] == room and note["type"] == "m.room.message" and note["sender"] == a.user_id
    assert note["sender_display_name"] == a.user_id[1:].split(":")[0]
    assert note["room_name"] == "Sales" and note["content"]["body"] == "ping"
    assert note["counts"] == {"unread": 1}  # one room with unread notifications
    assert note["prio"] == "high" and first["prio"] == "low"
    [device] = note["devices"]
    assert device["app_id"] == "com.example.app" and device["pushkey"] == "key-mention"
    assert device["data"] == {"custom": "kept"}  # everything but the url
    assert device["tweaks"] == {"sound": "default", "highlight": True}
    assert isinstance(device["pushkey_ts"], int) and device["pushkey_ts"] < 10**11  # seconds
    assert first["devices"][0]["tweaks"] == {}
    # A read receipt lowers the counts: a badge-only push follows.
    before = len(gw.notifications)
    assert b.request("POST", f"{V3}/rooms/{room}/receipt/m.read/{mention}", {})[0] == 200
    badge = gw.wait_for(lambda ns: len(ns) > before)[before]
    assert badge["counts"] == {"unread": 0} and "event_id" not in badge
    assert not gw.bad_requests


def test_event_id_only_format(env, unique):
    srv, gw = env
    a, b, room = _setup(srv, gw.url, unique, "key-idonly", format="event_id_only")
    eid = _send(a, room, "t1", "secret plans")
    [note] = [n for n in gw.wait_for(lambda ns: any(n.get("event_id") == eid for n in ns))
              if n.get("event_id") == eid]
    assert set(note) == {"event_id", "room_id", "counts", "prio", "devices"}
    assert note["devices"][0]["data"] == {"format": "event_id_only"}


def test_no_push_while_the_user_is_syncing(env, unique):
    srv, gw = env
    a, b, room = _setup(srv, gw.url, unique, "key-syncing")
    _, first = b.request("GET", f"{V3}/sync?timeout=0")
    result: dict = {}
    poll = threading.Thread(target=lambda: result.update(
        resp=b.request("GET", f"{V3}/sync?timeout=10000&since={first['next_batch']}")))
    poll.start()
    time.sleep(0.5)  # the long-poll is in flight
    seen = _send(a, room, "t1", "you are looking")
    poll.join(15)
    assert result["resp"][0] == 200
    time.sleep(2.0)  # past synced_within_ms (1 s): the next one is pushed
    pushed = _send(a, room, "t2", "you looked away")
    gw.wait_for(lambda ns: any(n.get("event_id") == pushed for n in ns))
    assert gw.for_event(seen) == []


def test_rejected_pushkey_removes_the_pusher(env, unique):
    srv, gw = env
    gw.reject.add("key-dead")
    a, b, room = _setup(srv, gw.url, unique, "key-dead")
    eid = _send(a, room, "t1", "hello")
    gw.wait_for(lambda ns: any(n.get("event_id") == eid for n in ns))
    deadline = time.time() + 10
    while b.request("GET", f"{V3}/pushers")[1]["pushers"] and time.time() < deadline:
        time.sleep(0.1)
    assert b.request("GET", f"{V3}/pushers")[1]["pushers"] == []
    later = _send(a, room, "t2", "anyone?")
    time.sleep(1.0)
    assert gw.for_event(later) == []


def test_gateway_down_then_back_gets_the_push(tmp_path, unique):
    port = free_port()
    gw = PushGateway(port)  # not started: the gateway is down
    srv = ServerProcess(tmp_path / "hs", extra_config=CONFIG)
    srv.start()
    try:
        a, b, room = _setup(srv, gw.url, unique, "key-outage")
        eid = _send(a, room, "t1", "sent during the outage", **{"m.mentions": {"user_ids": [b.user_id]}})
        time.sleep(OUTAGE_S)
        assert b.request("GET", f"{V3}/pushers")[1]["pushers"]  # kept through the failures
        gw.start()
        gw.wait_for(lambda ns: any(n.get("event_id") == eid for n in ns), timeout=15)
        time.sleep(1.0)
        assert len(gw.for_event(eid)) == 1
        assert gw.for_event(eid)[0]["counts"] == {"unread": 1}
        assert "ERROR" not in srv.log_text()
    finally:
        srv.stop()
        srv.stop_postgres()
        gw.stop()
