"""A recording push gateway for tests: it implements the push-gateway API
(`POST /_matrix/push/v1/notify`) the way Sygnal answers it, checks each request's shape,
records the notifications, and lists as `rejected` the pushkeys it is told to reject.

Sygnal itself (PyPI matrix-sygnal) cannot be installed here (the package index this
project can reach does not carry it), so this stand-in is what the tests run against;
docs/notifications.md says so."""
from __future__ import annotations

import threading
import time

from tests.json_receiver import Call, JsonReceiver


class PushGateway:
    def __init__(self, port: int) -> None:
        self.port = port
        self.notifications: list[dict] = []
        self.bad_requests: list[str] = []
        self.reject: set[str] = set()
        self._http = JsonReceiver(self._answer, port)
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/_matrix/push/v1/notify"

    def start(self) -> None:
        self._http.start()

    def stop(self) -> None:
        self._http.close()

    def _answer(self, call: Call) -> tuple[int, dict]:
        if call.method != "POST" or call.path != "/_matrix/push/v1/notify":
            return 404, {"errcode": "M_UNRECOGNIZED"}
        try:
            note = call.body["notification"]
            devices = note["devices"]
            assert isinstance(devices, list) and devices
            for d in devices:
                assert isinstance(d["app_id"], str) and isinstance(d["pushkey"], str)
        except (ValueError, KeyError, AssertionError, TypeError) as e:
            self.bad_requests.append(repr(e))
            return 400, {"errcode": "M_BAD_JSON"}
        with self._lock:
            self.notifications.append(note)
        return 200, {"rejected": [d["pushkey"] for d in devices if d["pushkey"] in self.reject]}

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
