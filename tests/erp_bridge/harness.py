"""Test harness for the ERP bridge: a real homeserver (tests/server_harness.py) with the
bridge's registration, a real bridge process, and a small webhook receiver standing in
for the ERP."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from appservice.erp_bridge.config import generate_config_text
from appservice.erp_bridge.webhook import verify
from tests.server_harness import REPO, Http, ServerProcess, free_port, launch, sigkill, terminate, wait_until_up


@dataclass
class Delivery:
    key: str
    signature: str | None
    raw: bytes
    body: dict
    valid_signature: bool


class WebhookReceiver:
    """Stands in for the ERP's webhook endpoint. `fail_with` makes it answer with that
    status; `stop()` closes the socket (connection refused) until `start()` again."""

    def __init__(self, secret: str, port: int | None = None) -> None:
        self.secret = secret
        self.port = port or free_port()
        self.deliveries: list[Delivery] = []
        self.fail_with: int | None = None
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/erp/hook"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if receiver.fail_with:
                    self.send_response(receiver.fail_with)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                sig = self.headers.get("X-ERP-Signature")
                with receiver._lock:
                    receiver.deliveries.append(Delivery(
                        key=self.headers.get("Idempotency-Key", ""), signature=sig, raw=raw,
                        body=json.loads(raw), valid_signature=verify(receiver.secret, raw, sig)))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def snapshot(self, types: tuple[str, ...] | None = ("io.erpchat.message",)) -> list[Delivery]:
        """What arrived, of the given payload types (messages by default; None: all)."""
        with self._lock:
            return [d for d in self.deliveries if types is None or d.body.get("type") in types]

    def unique(self, room_id: str | None = None,
               types: tuple[str, ...] | None = ("io.erpchat.message",)) -> list[Delivery]:
        """Deliveries deduplicated by idempotency key (first arrival kept), optionally of
        one room, in arrival order: what a careful ERP would process."""
        seen: set[str] = set()
        out = []
        for d in self.snapshot(types):
            if room_id and d.body["room"]["room_id"] != room_id:
                continue
            if d.key not in seen:
                seen.add(d.key)
                out.append(d)
        return out

    def wait_for(self, predicate, timeout: float = 30.0) -> list[Delivery]:
        deadline = time.time() + timeout
        while time.time() < deadline:
            snap = self.snapshot()
            if predicate(snap):
                return snap
            time.sleep(0.05)
        raise AssertionError(f"webhook condition not met in {timeout}s; got {len(self.snapshot())} deliveries")


class BridgeProcess:
    def __init__(self, work_dir: Path, server: ServerProcess, webhook_url: str | None,
                 port: int | None = None) -> None:
        self.work_dir = work_dir
        self.server = server
        self.port = port or free_port()
        self.config_path = work_dir / "erp-bridge.yaml"
        self.registration_path = work_dir / "erp-registration.yaml"
        self.proc: subprocess.Popen | None = None
        work_dir.mkdir(parents=True, exist_ok=True)
        text = generate_config_text(
            server_name=server.server_name, hs_url=server.base_url, port=self.port,
            webhook_url=webhook_url, dsn=server.dsn())
        # Short backoff so the tests do not wait long for retries.
        text = text.replace("webhook_max_backoff_s: 10", "webhook_max_backoff_s: 2")
        text = text.replace("webhook_initial_backoff_s: 0.5", "webhook_initial_backoff_s: 0.1")
        text = text.replace("log_level: INFO", "log_level: DEBUG")
        self.config_path.write_text(text)
        self.config = yaml.safe_load(text)
        subprocess.run([sys.executable, "-m", "appservice.erp_bridge.cli", "generate-registration",
                        "--config", str(self.config_path), "--output", str(self.registration_path)],
                       cwd=REPO, check=True, capture_output=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_token(self) -> str:
        return self.config["erp"]["api_token"]

    @property
    def as_token(self) -> str:
        return self.config["appservice"]["as_token"]

    @property
    def hs_token(self) -> str:
        return self.config["appservice"]["hs_token"]

    @property
    def webhook_secret(self) -> str:
        return self.config["erp"]["webhook_secret"]

    def start(self, timeout: float = 60, extra_env: dict[str, str] | None = None) -> None:
        self.proc = launch("appservice.erp_bridge.cli", self.config_path, self.work_dir / "bridge.log",
                           extra_env)
        # The ping endpoint answers 401 without a token: any answer means it is up.
        wait_until_up(self.proc, self.base_url + "/_matrix/app/v1/ping", timeout, "bridge", self.log_text)

    def stop(self) -> None:
        terminate(self.proc, 20)
        self.proc = None

    def kill(self) -> None:
        sigkill(self.proc)
        self.proc = None

    def log_text(self) -> str:
        try:
            return (self.work_dir / "bridge.log").read_text()[-8000:]
        except OSError:
            return ""

    def erp(self) -> Http:
        return Http(self.base_url, self.api_token)

    def as_client(self) -> "AsClient":
        return AsClient(self.server.base_url, self.as_token)


class AsClient(Http):
    """The client-server API with the as_token, acting as any user of the namespace."""

    def as_user(self, method: str, path: str, user_id: str, body: Any = None) -> tuple[int, Any]:
        sep = "&" if "?" in path else "?"
        return self.request(method, f"{path}{sep}user_id={quote(user_id)}", body)

    def state(self, room_id: str, event_type: str, state_key: str, user_id: str) -> Any:
        status, body = self.as_user(
            "GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/state/{quote(event_type)}/{quote(state_key)}",
            user_id)
        return body if status == 200 else None

    def joined(self, room_id: str, user_id: str) -> set[str]:
        status, body = self.as_user("GET", f"/_matrix/client/v3/rooms/{quote(room_id)}/joined_members",
                                    user_id)
        assert status == 200, body
        return set(body["joined"])

    def resolve(self, alias: str, user_id: str | None = None) -> str | None:
        """Alias lookup; aliases of a tenant's rooms are visible only to that tenant's users."""
        path = f"/_matrix/client/v3/directory/room/{quote(alias)}"
        status, body = self.as_user("GET", path, user_id) if user_id else self.request("GET", path)
        return body["room_id"] if status == 200 else None


@dataclass
class Env:
    server: ServerProcess
    bridge: BridgeProcess
    webhook: WebhookReceiver
    notes: dict = field(default_factory=dict)

    @property
    def erp(self) -> Http:
        return self.bridge.erp()

    @property
    def hs(self) -> AsClient:
        return self.bridge.as_client()


def start_env(tmp: Path) -> Env:
    webhook_port = free_port()
    server = ServerProcess(tmp / "hs")
    bridge = BridgeProcess(tmp / "bridge", server, f"http://127.0.0.1:{webhook_port}/erp/hook")
    server.extra_config = f"app_service_config_files:\n  - {bridge.registration_path}\n"
    receiver = WebhookReceiver(bridge.webhook_secret, webhook_port)
    receiver.start()
    server.start()
    try:
        bridge.start()
    except Exception:
        server.stop()
        server.stop_postgres()
        raise
    return Env(server, bridge, receiver)


def stop_env(env: Env) -> None:
    env.bridge.stop()
    env.webhook.stop()
    env.server.stop()
    env.server.stop_postgres()
