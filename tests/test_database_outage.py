"""A PostgreSQL outage under a running server: requests answer 503 M_UNKNOWN with
Retry-After (never 500) while it is down, the server recovers by itself when it is back,
backends killed mid-workload lose no acknowledged write, and stopping the server stops
the PostgreSQL that someone else restarted in its data directory."""
from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import quote

import psycopg2

from tests.server_harness import Http, ServerProcess

V3 = "/_matrix/client/v3"


def _raw(srv: ServerProcess, method: str, path: str, body=None, token: str | None = None):
    """(status, json body, headers)."""
    req = urllib.request.Request(srv.base_url + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read() or b"null"), resp.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), e.headers


def _requests(room_id: str, unique) -> list[tuple[str, str, dict | None]]:
    """Calls that need the database: a send (the persister), reads, a registration."""
    return [
        ("PUT", f"{V3}/rooms/{quote(room_id)}/send/m.room.message/{unique('t')}",
         {"msgtype": "m.text", "body": "during"}),
        ("GET", f"{V3}/rooms/{quote(room_id)}/messages?dir=b&limit=5", None),
        ("GET", f"{V3}/joined_rooms", None),
        ("POST", f"{V3}/register", {"username": unique("late"), "password": "pw",
                                    "auth": {"type": "m.login.dummy"}}),
    ]


def test_outage_answers_503_and_the_server_recovers(own_server, unique):
    srv = own_server
    http = Http(srv.base_url)
    user = http.register(unique("out"))
    token = user["access_token"]
    http.token = token
    status, room = http.request("POST", f"{V3}/createRoom", {})
    assert status == 200, room
    pid = srv.proc.pid

    srv.postgres_stop_under_server()
    assert not srv.postmaster_running()
    for method, path, body in _requests(room["room_id"], unique):
        status, resp, headers = _raw(srv, method, path, body, token)
        assert (status, resp["errcode"]) == (503, "M_UNKNOWN"), (path, status, resp)
        assert int(headers["Retry-After"]) > 0

    srv.postgres_start_under_server()
    deadline = time.time() + 30
    while time.time() < deadline:
        status, _, _ = _raw(srv, "GET", f"{V3}/joined_rooms", None, token)
        if status == 200:
            break
        assert status == 503
        time.sleep(0.2)
    for method, path, body in _requests(room["room_id"], unique):
        status, resp, _ = _raw(srv, method, path, body, token)
        assert status == 200, (path, status, resp)
    assert srv.proc.pid == pid and srv.proc.poll() is None  # the same process, no restart
    status, msgs = http.request("GET", f"{V3}/rooms/{quote(room['room_id'])}/messages?dir=b&limit=5")
    assert msgs["chunk"][0]["content"] == {"msgtype": "m.text", "body": "during"}


def test_stop_stops_a_postgres_restarted_under_the_server(own_server, unique):
    srv = own_server
    Http(srv.base_url).register(unique("st"))
    srv.postgres_stop_under_server()
    srv.postgres_start_under_server()
    assert srv.postmaster_running()
    # The PostgreSQL running now was started by someone else; a clean stop stops it too.
    srv.stop()
    assert not srv.postmaster_running()
    assert not (srv.data_dir / "postgres" / "postmaster.pid").exists()


def _terminate_backends(dsn: str) -> int:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE pid <> pg_backend_pid() AND datname = current_database()"
                        " AND backend_type = 'client backend'")
            return cur.fetchone()[0]
    finally:
        conn.close()


def test_killed_backends_lose_no_acknowledged_write(own_server, unique):
    srv = own_server
    http = Http(srv.base_url)
    users = [http.register(unique("kb")) for _ in range(3)]
    owner = Http(srv.base_url, users[0]["access_token"])
    status, room = owner.request("POST", f"{V3}/createRoom", {"preset": "public_chat"})
    room_id = room["room_id"]
    for u in users[1:]:
        assert Http(srv.base_url, u["access_token"]).request(
            "POST", f"{V3}/join/{quote(room_id)}", {})[0] == 200

    acked: dict[str, str] = {}
    statuses: list[tuple[int, str]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def writer(n: int) -> None:
        client = Http(srv.base_url, users[n % len(users)]["access_token"])
        i = 0
        while not stop.is_set():
            txn = f"w{n}-{i}"
            status, resp = client.request("PUT", f"{V3}/rooms/{quote(room_id)}/send/m.room.message/{txn}",
                                          {"msgtype": "m.text", "body": txn})
            with lock:
                statuses.append((status, txn))
                if status == 200:
                    acked[txn] = resp["event_id"]
            if status != 503:
                i += 1  # after a 503 the same transaction is retried, as a client would

    def reader(n: int) -> None:
        client = Http(srv.base_url, users[n % len(users)]["access_token"])
        while not stop.is_set():
            for path in (f"{V3}/rooms/{quote(room_id)}/messages?dir=b&limit=20", f"{V3}/joined_rooms",
                         f"{V3}/rooms/{quote(room_id)}/members"):
                status, _ = client.request("GET", path)
                with lock:
                    statuses.append((status, path))

    threads = [threading.Thread(target=writer, args=(n,), daemon=True) for n in range(4)]
    threads += [threading.Thread(target=reader, args=(n,), daemon=True) for n in range(2)]
    for t in threads:
        t.start()
    killed = 0
    for _ in range(12):
        time.sleep(0.25)
        killed += _terminate_backends(srv.dsn())
    stop.set()
    for t in threads:
        t.join(60)
    assert killed >= 12, killed  # the server's connections really were cut, repeatedly
    assert not [s for s in statuses if s[0] not in (200, 503)], [s for s in statuses if s[0] not in (200, 503)][:5]
    assert len(acked) > 20, len(acked)

    for txn, event_id in acked.items():
        status, ev = owner.request("GET", f"{V3}/rooms/{quote(room_id)}/event/{quote(event_id)}")
        assert status == 200 and ev["content"]["body"] == txn, (txn, status, ev)
    seen: list[str] = []
    token = None
    while True:
        path = f"{V3}/rooms/{quote(room_id)}/messages?dir=b&limit=500" + (f"&from={quote(token)}" if token else "")
        status, page = owner.request("GET", path)
        assert status == 200, page
        seen += [e["event_id"] for e in page["chunk"]]
        token = page.get("end")
        if not token or not page["chunk"]:
            break
    assert set(acked.values()) <= set(seen)
    assert "unhandled error" not in (srv.data_dir / "server.log").read_text()
