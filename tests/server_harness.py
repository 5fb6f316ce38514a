"""Start a real homeserver process on a fresh embedded PostgreSQL for tests, and talk to
it over real HTTP."""
from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import urllib.parse
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from homeserver.config import lifted_rate_limits_yaml

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(module: str, config: Path, log_path: Path, env: dict | None = None) -> subprocess.Popen:
    """`python -m <module> run --config <config>`, output appended to `log_path`."""
    log = open(log_path, "ab")
    return subprocess.Popen([sys.executable, "-m", module, "run", "--config", str(config)],
                            cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})})


def wait_until_up(proc: subprocess.Popen, url: str, timeout: float, name: str, log_text) -> None:
    """Poll `url` until it answers (any HTTP status but 503, which a server starting up
    answers, counts as up) or the process dies."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited early:\n{log_text()}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except urllib.error.HTTPError as e:
            if e.code != 503:
                return
            time.sleep(0.1)
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.1)
    raise RuntimeError(f"{name} did not come up:\n{log_text()}")


def terminate(proc: subprocess.Popen | None, timeout: float = 30) -> None:
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def sigkill(proc: subprocess.Popen | None) -> None:
    """SIGKILL: no shutdown hooks run."""
    if proc:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


@dataclass
class ServerProcess:
    data_dir: Path
    port: int = field(default_factory=free_port)
    server_name: str = "test.local"
    proc: subprocess.Popen | None = None
    extra_config: str = ""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "homeserver.yaml"

    def write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            f"server_name: {self.server_name}\n"
            f"public_baseurl: {self.base_url}/\n"
            f"data_dir: {self.data_dir}\n"
            "log_level: INFO\n"
            f"listeners:\n  - port: {self.port}\n    bind_address: 127.0.0.1\n"
            "registration:\n  bcrypt_rounds: 4\n"
            # Tests register, log in and send far faster than people, all from 127.0.0.1:
            # limits lifted in the test server's own config. A test wanting a limit sets
            # its key again in extra_config, which comes later in the file and wins.
            + lifted_rate_limits_yaml() + self.extra_config
        )

    def start(self, timeout: float = 60) -> None:
        if not self.config_path.exists():
            self.write_config()
        self.proc = launch("homeserver.cli", self.config_path, self.data_dir / "server.log")
        wait_until_up(self.proc, self.base_url + "/_matrix/client/versions", timeout, "server",
                      self.log_text)

    def stop(self) -> None:
        terminate(self.proc)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks run (the embedded Postgres stays up)."""
        sigkill(self.proc)
        self.proc = None

    def stop_postgres(self) -> None:
        pgdata = self.data_dir / "postgres"
        if (pgdata / "postmaster.pid").exists():
            # Through our wrapper: it also forgets the pids of killed servers, which
            # would otherwise keep this cluster alive.
            subprocess.run(
                [sys.executable, "-c",
                 "import sys; from pathlib import Path; from storage.embedded import EmbeddedPostgres;"
                 " e = EmbeddedPostgres(Path(sys.argv[1])); e.start(); e.stop()",
                 str(self.data_dir)],
                cwd=REPO, capture_output=True, timeout=60)

    def postgres_stop_under_server(self) -> None:
        """Stop the embedded PostgreSQL while the server keeps running (an outage)."""
        subprocess.run(
            [sys.executable, "-c",
             "import sys; from pathlib import Path; from storage.embedded import stop_postmaster;"
             " stop_postmaster(Path(sys.argv[1]))", str(self.data_dir / "postgres")],
            cwd=REPO, check=True, capture_output=True, timeout=90)

    def postgres_start_under_server(self) -> None:
        """Start it again in the same data directory, as someone other than the server
        would (this process lets go of it on exit without stopping it)."""
        subprocess.run(
            [sys.executable, "-c",
             "import sys, pgserver; pgserver.get_server(sys.argv[1], cleanup_mode=None)",
             str((self.data_dir / "postgres").resolve())],
            cwd=REPO, check=True, capture_output=True, timeout=90)

    def postmaster_running(self) -> bool:
        pid_file = self.data_dir / "postgres" / "postmaster.pid"
        try:
            os.kill(int(pid_file.read_text().split()[0]), 0)
        except PermissionError:
            return True
        except (OSError, ValueError, IndexError):
            return False
        return True

    def log_text(self) -> str:
        try:
            return (self.data_dir / "server.log").read_text()[-5000:]
        except OSError:
            return ""

    def dsn(self) -> str:
        return f"postgresql://postgres:@/postgres?host={self.data_dir / 'postgres'}"


@contextmanager
def serving(srv: ServerProcess) -> Iterator[ServerProcess]:
    """Start `srv` (its config as written, or the default one); stop it and its embedded
    PostgreSQL afterwards."""
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        srv.stop_postgres()


def exchange(req: urllib.request.Request, timeout: float = 30,
             context: ssl.SSLContext | None = None) -> tuple[int, Any]:
    """Send a prepared request: (status, decoded JSON), or the raw bytes of an error body
    that is not JSON."""
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            payload = resp.read()
            return resp.status, json.loads(payload) if payload else None
    except urllib.error.HTTPError as e:
        payload = e.read()
        try:
            return e.code, json.loads(payload)
        except ValueError:
            return e.code, payload


class Http:
    """Tiny blocking JSON client for raw protocol checks. `user_id` and `device_id` are
    set when it is a registered user's (`new_user`)."""

    def __init__(self, base_url: str, token: str | None = None) -> None:
        self.base_url = base_url
        self.token = token
        self.user_id: str | None = None
        self.device_id: str | None = None

    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
                token: str | None = None, headers: dict | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        tok = token or self.token
        if tok:
            req.add_header("Authorization", f"Bearer {tok}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        return exchange(req)

    def register(self, username: str, password: str = "secret-pw") -> dict:
        status, body = self.request("POST", "/_matrix/client/v3/register", {
            "username": username, "password": password, "auth": {"type": "m.login.dummy"}})
        assert status == 200, body
        return body


def new_user(base_url: str, name: str, password: str = "secret-pw") -> Http:
    """The client of a newly registered user `name`."""
    reg = Http(base_url).register(name, password)
    user = Http(base_url, reg["access_token"])
    user.user_id, user.device_id = reg["user_id"], reg["device_id"]
    return user


def pair_in_room(base_url: str, alice_name: str, bob_name: str) -> tuple[Http, Http, str]:
    """Two new users, and a private room alice created and bob joined."""
    alice, bob = new_user(base_url, alice_name), new_user(base_url, bob_name)
    status, room = alice.request("POST", "/_matrix/client/v3/createRoom", {"invite": [bob.user_id]})
    assert status == 200, room
    room_id = room["room_id"]
    status, body = bob.request("POST", f"/_matrix/client/v3/join/{urllib.parse.quote(room_id)}", {})
    assert status == 200, body
    return alice, bob, room_id
