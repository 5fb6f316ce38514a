"""Durability: client transaction ids are idempotent under concurrency, and every event
the server acknowledged survives a SIGKILL mid-burst and a clean restart."""
from __future__ import annotations

import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.server_harness import Http, ServerProcess


def _send_path(room_id: str, txn_id: str) -> str:
    return (f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}"
            f"/send/m.room.message/{urllib.parse.quote(txn_id)}")


def _all_messages(http: Http, room_id: str) -> list[dict]:
    """Every event of the room visible through /messages, newest first."""
    events: list[dict] = []
    token = None
    for _ in range(1000):
        path = f"/_matrix/client/v3/rooms/{urllib.parse.quote(room_id)}/messages?dir=b&limit=500"
        if token:
            path += "&from=" + urllib.parse.quote(token)
        status, page = http.request("GET", path)
        assert status == 200, page
        events.extend(page["chunk"])
        token = page.get("end")
        if not token or not page["chunk"]:
            return events
    raise AssertionError("pagination did not terminate")


def _new_room(http: Http, unique) -> tuple[dict, str]:
    user = http.register(unique("dur"))
    http.token = user["access_token"]
    status, room = http.request("POST", "/_matrix/client/v3/createRoom", {"name": "durability"})
    assert status == 200, room
    return user, room["room_id"]


# ---------------------------------------------------------------------------------
# Concurrent duplicate transaction ids
# ---------------------------------------------------------------------------------

def test_concurrent_duplicate_txn_id_yields_one_event(server, unique):
    http = Http(server.base_url)
    user, room_id = _new_room(http, unique)
    token = user["access_token"]
    txn_id = unique("txn")
    body = {"msgtype": "m.text", "body": f"only once {txn_id}"}
    n = 24
    barrier = threading.Barrier(n)

    def send(_i):
        barrier.wait()
        return Http(server.base_url, token).request("PUT", _send_path(room_id, txn_id), body)

    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(send, range(n)))

    assert all(status == 200 for status, _ in results), results
    ids = {resp["event_id"] for _, resp in results}
    assert len(ids) == 1, f"one txn id produced several events: {ids}"
    event_id = ids.pop()

    # A sequential retry after success still returns the same event.
    for _ in range(3):
        status, resp = http.request("PUT", _send_path(room_id, txn_id), body)
        assert status == 200, resp
        assert resp["event_id"] == event_id

    matching = [e for e in _all_messages(http, room_id)
                if e["type"] == "m.room.message" and e["content"].get("body") == body["body"]]
    assert [e["event_id"] for e in matching] == [event_id]
    # The sender's own device sees its transaction id echoed back.
    assert matching[0].get("unsigned", {}).get("transaction_id") == txn_id


def test_concurrent_distinct_txn_ids_and_other_devices(server, unique):
    """Distinct txn ids are distinct events; the same txn id from another device (access
    token) is a different transaction."""
    http = Http(server.base_url)
    user, room_id = _new_room(http, unique)
    token = user["access_token"]
    status, login = http.request("POST", "/_matrix/client/v3/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": user["user_id"]},
        "password": "secret-pw"})
    assert status == 200, login
    token2 = login["access_token"]
    assert login["device_id"] != user["device_id"]

    n = 16
    barrier = threading.Barrier(n)

    def send(i):
        barrier.wait()
        tok = token if i % 2 == 0 else token2
        # Pairs (0,1), (2,3), ... share a txn id but come from different devices.
        return Http(server.base_url, tok).request(
            "PUT", _send_path(room_id, f"pair{i // 2}"), {"msgtype": "m.text", "body": f"m{i}"})

    with ThreadPoolExecutor(n) as pool:
        results = list(pool.map(send, range(n)))
    assert all(s == 200 for s, _ in results), results
    ids = [r["event_id"] for _, r in results]
    assert len(set(ids)) == n
    seen = {e["event_id"] for e in _all_messages(http, room_id)}
    assert set(ids) <= seen


# ---------------------------------------------------------------------------------
# SIGKILL mid-burst
# ---------------------------------------------------------------------------------

@pytest.fixture
def own_server(tmp_path):
    srv = ServerProcess(tmp_path / "hs")
    srv.start()
    try:
        yield srv
    finally:
        srv.kill()
        srv.stop_postgres()
    # A killed server's stale handle must not keep its embedded PostgreSQL alive.
    assert not (srv.data_dir / "postgres" / "postmaster.pid").exists()


def test_acknowledged_events_survive_sigkill_and_restart(own_server, unique):
    srv = own_server
    http = Http(srv.base_url)
    user, room_id = _new_room(http, unique)
    token = user["access_token"]
    # A second member, so the burst interleaves senders in one room.
    other = http.register(unique("dur2"))
    assert http.request("POST", f"/_matrix/client/v3/rooms/{room_id}/invite",
                        {"user_id": other["user_id"]})[0] == 200
    assert Http(srv.base_url, other["access_token"]).request(
        "POST", f"/_matrix/client/v3/join/{urllib.parse.quote(room_id)}", {})[0] == 200

    acked: dict[str, str] = {}  # txn_id -> event_id (per token below)
    acked_lock = threading.Lock()
    stop = threading.Event()
    errors: list[str] = []

    def burst(worker: int) -> None:
        tok = token if worker % 2 == 0 else other["access_token"]
        client = Http(srv.base_url, tok)
        i = 0
        while not stop.is_set():
            txn = f"w{worker}-{i}"
            try:
                status, resp = client.request(
                    "PUT", _send_path(room_id, txn), {"msgtype": "m.text", "body": txn})
            except Exception:  # connection refused/reset once the server is gone
                if not stop.is_set():
                    time.sleep(0.01)
                continue
            if status == 200:
                with acked_lock:
                    acked[txn] = resp["event_id"]
            elif not stop.is_set():
                errors.append(f"{status} {resp}")
            i += 1

    threads = [threading.Thread(target=burst, args=(w,), daemon=True) for w in range(6)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    srv.kill()  # SIGKILL with requests in flight
    time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(40)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors[:5]
    assert len(acked) > 20, f"burst acknowledged only {len(acked)} events"

    srv.start()
    http = Http(srv.base_url, token)
    for txn, event_id in acked.items():
        status, ev = http.request(
            "GET", f"/_matrix/client/v3/rooms/{room_id}/event/{urllib.parse.quote(event_id)}")
        assert status == 200, (txn, event_id, ev)
        assert ev["event_id"] == event_id
        assert ev["content"]["body"] == txn
    listed = _all_messages(http, room_id)
    listed_ids = [e["event_id"] for e in listed]
    assert len(listed_ids) == len(set(listed_ids)), "an event is listed twice"
    missing = set(acked.values()) - set(listed_ids)
    assert not missing, f"{len(missing)} acknowledged events missing from /messages"
    bodies = [e["content"].get("body") for e in listed if e["type"] == "m.room.message"]
    assert len(bodies) == len(set(bodies)), "a transaction was persisted twice"

    # Retrying an acknowledged transaction after the crash returns the same event.
    for txn in list(acked)[:: max(1, len(acked) // 20)]:
        tok = token if int(txn[1:].split("-")[0]) % 2 == 0 else other["access_token"]
        status, resp = Http(srv.base_url, tok).request(
            "PUT", _send_path(room_id, txn), {"msgtype": "m.text", "body": txn})
        assert status == 200, resp
        assert resp["event_id"] == acked[txn]

    # The room is still writable, and the new event follows the surviving history.
    status, after = http.request("PUT", _send_path(room_id, "after-crash"),
                                 {"msgtype": "m.text", "body": "after crash"})
    assert status == 200, after
    newest = _all_messages(http, room_id)
    assert newest[0]["event_id"] == after["event_id"]
    assert len(newest) == len(listed) + 1

    # A clean stop/start keeps everything.
    srv.stop()
    srv.start()
    http = Http(srv.base_url, token)
    again = _all_messages(http, room_id)
    assert [e["event_id"] for e in again] == [e["event_id"] for e in newest]
    status, me = http.request("GET", "/_matrix/client/v3/account/whoami")
    assert status == 200 and me["user_id"] == user["user_id"]
    status, joined = http.request("GET", "/_matrix/client/v3/joined_rooms")
    assert status == 200 and room_id in joined["joined_rooms"]
    status, ev = http.request(
        "GET", f"/_matrix/client/v3/rooms/{room_id}/event/{urllib.parse.quote(after['event_id'])}")
    assert status == 200 and ev["content"]["body"] == "after crash"
    srv.stop()
