"""`homeserver run-all`: what `make run` starts. The homeserver and the ERP bridge as two
processes, the bridge's config and registration generated on first start and wired in
through the homeserver config's `app_service_config_files`. The bridge is started by its
own command, never imported: it is a separate program that could run against any server."""
from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from homeserver.config import Config

logger = logging.getLogger("homeserver.launcher")
BRIDGE_CONFIG = "erp-bridge.yaml"


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _registration_path(config: Config) -> Path | None:
    for path in config.app_service_config_files:
        if "erp-bridge" in path.name:
            return path
    return None


def skip_missing_bridge_registration(config: Config) -> Path | None:
    """For `homeserver run` alone: the ERP bridge's registration that `run-all` generates
    on first start may not exist yet. Leave it out (the server runs without the bridge)
    and return its path so the caller can say so; any other missing registration is
    still an error."""
    path = _registration_path(config)
    if path is None or path.exists():
        return None
    config.app_service_config_files = [p for p in config.app_service_config_files if p != path]
    return path


def prepare_bridge(config: Config) -> Path | None:
    """Write the bridge's config and registration if they are missing; return the
    bridge config path, or None when the homeserver config lists no bridge registration."""
    registration = _registration_path(config)
    if registration is None:
        return None
    bridge_config = config.data_dir / BRIDGE_CONFIG
    config.data_dir.mkdir(parents=True, exist_ok=True)
    if not bridge_config.exists():
        cmd = [_bin("erp-bridge"), "generate-config", "--output", str(bridge_config),
               "--server-name", config.server_name,
               "--homeserver-url", config.public_baseurl.rstrip("/")]
        if config.database.dsn:
            cmd += ["--database-dsn", config.database.dsn]
        else:
            cmd += ["--embedded-pgdata", str((config.data_dir / "postgres").resolve())]
        subprocess.run(cmd, check=True)
    # Every start: idempotent, and keeps the registration in step with the bridge config.
    subprocess.run([_bin("erp-bridge"), "generate-registration", "--config", str(bridge_config),
                    "--output", str(registration)], check=True, stdout=subprocess.DEVNULL)
    return bridge_config


def _wait_for(url: str, proc: subprocess.Popen, timeout_s: float) -> bool:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            urllib.request.urlopen(url, timeout=1)
            return True
        except OSError:
            time.sleep(0.2)
    return False


def run_all(config_path: Path, config: Config) -> int:
    bridge_config = prepare_bridge(config)
    hs = subprocess.Popen([_bin("homeserver"), "run", "--config", str(config_path)])
    procs = [hs]
    stopping = False

    def stop(*_args) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    listener = next((x for x in config.listeners if "client" in x.resources), config.listeners[0])
    # /health answers 200 once start-up is complete (503 before).
    if not _wait_for(f"http://{listener.bind_address}:{listener.port}/health", hs, 120):
        logger.error("the homeserver did not start; not starting the bridge")
        return _shutdown(procs, hs.poll() or 1)
    if bridge_config is not None:
        procs.insert(0, subprocess.Popen([_bin("erp-bridge"), "run", "--config", str(bridge_config)]))
    while not stopping:
        if any(p.poll() is not None for p in procs):
            break  # one of them died: take the other down too
        time.sleep(0.2)
    return _shutdown(procs, 0 if stopping else 1)


def _shutdown(procs: list[subprocess.Popen], code: int) -> int:
    # The bridge first: it uses the homeserver's embedded PostgreSQL.
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
    return code
