"""A recording push gateway for tests: it implements the push-gateway API
(`POST /_matrix/push/v1/notify`) the way Sygnal answers it, checks each request's shape,
records the notifications, and lists as `rejected` the pushkeys it is told to reject.

Sygnal itself (PyPI matrix-sygnal) cannot be installed here (the package index this
project can reach does not carry it), so this stand-in is what the tests run against;
docs/notifications.md says so."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class PushGateway:
    def __init__(self, port: int) -> None:
        self.port = port
        self.notifications: list[dict] = []
        self.bad_requests: list[str] = []
        self.reject: set[str] = set()
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/_matrix/push/v1/notify"

    def start(self) -> None:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _answer(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                if self.path != "/_matrix/push/v1/notify":
                    return self._answer(404, {"errcode": "M_UNRECOGNIZED"})
                try:
                    body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                    note = body["notification"]
                    devices = note["devices"]
                    assert isinstance(devices, list) and devices
                    for d in devices:
                        assert isinstance(d["app_id"], str) and isinstance(d["pushkey"], str)
                except (ValueError, KeyError, AssertionError, TypeError) as e:
                    gateway.bad_requests.append(repr(e))
                    return self._answer(400, {"errcode": "M_BAD_JSON"})
                with gateway._lock:
                    gateway.notifications.append(note)
                rejected = [d["pushkey"] for d in devices if d["pushkey"] in gateway.reject]
                self._answer(200, {"rejected": rejected})

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait_for(self, predicate, timeout: float = 20.0) -> list[dict]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self._lock:
                snapshot = list(self.notifications)
            if predicate(snapshot):
                return snapshot
            time.sleep(0.05)
        raise AssertionError(f"gateway condition not met in {timeout}s; got {self.notifications}")

    def for_event(self, event_id: str) -> list[dict]:
        with self._lock:
            return [n for n in self.notifications if n.get("event_id") == event_id]
