"""An application service that is unreachable for two minutes during a burst of 500
messages (and a homeserver restart in the middle) still receives all 500, once each, in
order, once it is back."""
from __future__ import annotations

import json
import os
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import yaml

from tests.server_harness import Http, ServerProcess, free_port

OUTAGE_S = float(os.environ.get("AS_OUTAGE_SECONDS", "120"))


class Receiver:
    """A minimal application service: records transactions, deduplicated by id."""

    def __init__(self, port: int, hs_token: str) -> None:
        self.port, self.hs_token = port, hs_token
        self.txns: dict[str, list[dict]] = {}
        self.order: list[str] = []
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_PUT(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.headers.get("Authorization") != f"Bearer {receiver.hs_token}":
                    self.send_response(403)
                    self.end_headers()
                    return
                txn = self.path.rsplit("/", 1)[-1].split("?")[0]
                if txn not in receiver.txns:
                    receiver.txns[txn] = body["events"]
                    receiver.order.append(txn)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def bodies(self) -> list[str]:
        return [e["content"].get("body") for t in self.order for e in self.txns[t]
                if e["type"] == "m.room.message"]


def test_outage_loses_nothing(tmp_path):
    as_port = free_port()
    reg = {"id": "outage", "url": f"http://127.0.0.1:{as_port}", "as_token": secrets.token_hex(16),
           "hs_token": secrets.token_hex(16), "sender_localpart": "_out_bot",
           "namespaces": {"users": [{"exclusive": True, "regex": "@_out_.*"}], "aliases": [], "rooms": []}}
    (tmp_path / "reg.yaml").write_text(yaml.safe_dump(reg))
    srv = ServerProcess(tmp_path / "hs", extra_config=f"app_service_config_files: [{tmp_path / 'reg.yaml'}]\n")
    srv.start()
    receiver = Receiver(as_port, reg["hs_token"])
    receiver.start()
    try:
        http = Http(srv.base_url)
        alice = http.register("alice")
        http.token = alice["access_token"]
        bot = Http(srv.base_url, reg["as_token"])
        _, room = http.request("POST", "/_matrix/client/v3/createRoom", {"invite": ["@_out_bot:test.local"]})
        room_id = room["room_id"]
        assert bot.request("POST", f"/_matrix/client/v3/rooms/{room_id}/join", {})[0] == 200
        http.request("PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/warm",
                     {"msgtype": "m.text", "body": "warm-up"})
        deadline = time.time() + 10
        while "warm-up" not in receiver.bodies() and time.time() < deadline:
            time.sleep(0.1)
        assert "warm-up" in receiver.bodies()

        receiver.stop()  # the service goes away
        outage_start = time.time()
        for i in range(500):
            if i == 250:
                srv.stop()   # and the homeserver restarts in the middle of the burst
                srv.start()
            status, _ = http.request("PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/m{i}",
                                     {"msgtype": "m.text", "body": f"msg {i}"})
            assert status == 200
        time.sleep(max(0.0, OUTAGE_S - (time.time() - outage_start)))
        receiver.start()  # back after two minutes

        expected = [f"msg {i}" for i in range(500)]
        deadline = time.time() + 60
        while time.time() < deadline:
            got = [b for b in receiver.bodies() if b and b.startswith("msg ")]
            if len(got) >= 500:
                break
            time.sleep(0.2)
        got = [b for b in receiver.bodies() if b and b.startswith("msg ")]
        assert got == expected  # all 500, each once, in order
        all_ids = [e["event_id"] for t in receiver.order for e in receiver.txns[t]]
        assert len(all_ids) == len(set(all_ids))  # no event in two transactions
    finally:
        receiver.stop()
        srv.stop()
        srv.stop_postgres()
