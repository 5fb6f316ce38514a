"""A stand-in ERP, run as its own process by the tests: it receives the bridge's webhook
the way the docs tell an ERP to (verify the signature and its timestamp, refuse replays,
deduplicate by Idempotency-Key, answer 2xx once stored), and lets the test read what it
received.

    python -m tests.erp_bridge.erp_client --port P --secret S

    POST /hook            the webhook endpoint
    GET  /deliveries      {"accepted": [payload, ...] (first arrival of each key, in
                           arrival order), "duplicates": n, "refused": n}
    POST /control         {"fail_with": 503 | null}: answer errors for a while
"""
from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from appservice.erp_bridge.webhook import verify


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", required=True)
    args = parser.parse_args()
    lock = threading.Lock()
    accepted: list[dict] = []
    seen: set[str] = set()
    counters = {"duplicates": 0, "refused": 0}
    control: dict = {"fail_with": None}

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path == "/control":
                control.update(json.loads(raw))
                return self._answer(200, {})
            if control["fail_with"]:
                return self._answer(control["fail_with"], {"error": "not now"})
            if not verify(args.secret, raw, self.headers.get("X-ERP-Signature")):
                with lock:
                    counters["refused"] += 1
                return self._answer(401, {"error": "bad signature or stale timestamp"})
            key = self.headers.get("Idempotency-Key", "")
            with lock:
                if key in seen:
                    counters["duplicates"] += 1
                else:
                    seen.add(key)
                    accepted.append(json.loads(raw))
            self._answer(200, {})

        def do_GET(self) -> None:  # noqa: N802
            with lock:
                return self._answer(200, {"accepted": list(accepted), **counters})

        def log_message(self, *a) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
