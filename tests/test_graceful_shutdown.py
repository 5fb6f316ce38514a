"""SIGTERM during a burst of sends: every send the server acknowledged is stored, every
waiting long-poll got an answer, and the process exits with 0 after stopping its
embedded PostgreSQL."""
from __future__ import annotations

import signal
import threading
import time

import psycopg2

from tests.server_harness import Http, ServerProcess

V3 = "/_matrix/client/v3"


def _user(srv, name: str) -> Http:
    http = Http(srv.base_url)
    http.token = http.register(name)["access_token"]
    return http


def test_sigterm_during_a_burst_of_sends(tmp_path):
    srv = ServerProcess(tmp_path / "hs")
    srv.start()
    try:
        alice, dave = _user(srv, "alice"), _user(srv, "dave")
        _, room = alice.request("POST", f"{V3}/createRoom", {})
        _, quiet = dave.request("POST", f"{V3}/createRoom", {})
        _, first = dave.request("GET", f"{V3}/sync?timeout=0")
        polls: list[tuple[int, object]] = []
        errors: list[Exception] = []

        def long_poll() -> None:
            try:
                polls.append(dave.request("GET", f"{V3}/sync?timeout=60000&since={first['next_batch']}"))
            except Exception as e:  # a reset connection: no answer
                errors.append(e)
        pollers = [threading.Thread(target=long_poll) for _ in range(4)]
        for t in pollers:
            t.start()

        acked: list[str] = []
        stop = threading.Event()

        def sender(n: int) -> None:
            i = 0
            while not stop.is_set():
                try:
                    status, body = alice.request("PUT", f"{V3}/rooms/{room['room_id']}/send/m.room.message/s{n}-{i}",
                                                 {"msgtype": "m.text", "body": f"burst {n} {i}"})
                except Exception:
                    return  # the listener is gone
                if status == 200:
                    acked.append(body["event_id"])
                elif status != 503:
                    raise AssertionError((status, body))
                i += 1
        senders = [threading.Thread(target=sender, args=(n,)) for n in range(6)]
        for t in senders:
            t.start()
        time.sleep(1.5)
        assert len(acked) > 20
        srv.proc.send_signal(signal.SIGTERM)
        code = srv.proc.wait(60)
        stop.set()
        for t in senders + pollers:
            t.join(30)
        assert code == 0, srv.log_text()
        assert not errors and len(polls) == 4 and all(status == 200 for status, _ in polls), (polls, errors)
        assert not srv.postmaster_running()
        log = srv.log_text()
        assert "shutdown: drained" in log
        srv.proc = None
        srv.start()  # everything acknowledged is there after a restart
        with psycopg2.connect(srv.dsn()) as conn, conn.cursor() as cur:
            cur.execute("SELECT event_id FROM events WHERE event_id = ANY(%s)", (acked,))
            stored = {r[0] for r in cur.fetchall()}
        assert stored == set(acked), f"{len(set(acked) - stored)} acknowledged sends were lost"
        assert quiet["room_id"]
    finally:
        srv.stop()
        srv.stop_postgres()
