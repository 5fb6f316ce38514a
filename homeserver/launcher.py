"""`homeserver run-all`: what `make run` starts. The homeserver and the ERP bridge as two
processes, the bridge's config and registration generated on first start and wired in
through the homeserver config's `app_service_config_files`. The bridge is started by its
own command, never imported: it is a separate program that could run against any server.

Supervision: the bridge is restarted whenever it exits (each exit logged with its code or
signal), after a delay that doubles from 1 s up to 30 s while it keeps failing and goes
back to 1 s once it has run for a minute. Only the homeserver's own exit (or Ctrl-C /
SIGTERM) stops everything: the homeserver owns the embedded PostgreSQL the bridge uses."""
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
RESTART_INITIAL_S = 1.0
RESTART_MAX_S = 30.0
STABLE_AFTER_S = 60.0


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


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


class BridgeSupervisor:
    """Keeps the bridge running: restarts it with backoff when it exits."""

    def __init__(self, bridge_config: Path, clock=time.monotonic) -> None:
        self.cmd = [_bin("erp-bridge"), "run", "--config", str(bridge_config)]
        self.clock = clock
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self.delay = RESTART_INITIAL_S
        self.restart_at: float | None = None
        self.restarts = 0

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, start_new_session=True)
        self.started_at = self.clock()
        self.restart_at = None
        logger.info("ERP bridge started (pid %d)", self.proc.pid)

    def poll(self) -> None:
        """Call regularly: notices an exit and restarts when the delay is over."""
        now = self.clock()
        if self.proc is not None:
            code = self.proc.poll()
            if code is None:
                return
            ran = now - self.started_at
            if ran >= STABLE_AFTER_S:
                self.delay = RESTART_INITIAL_S
            logger.error("ERP bridge (pid %d) %s after %.1f s; restarting in %.0f s",
                         self.proc.pid, describe_exit(code), ran, self.delay)
            self.proc = None
            self.restart_at = now + self.delay
            self.delay = min(self.delay * 2, RESTART_MAX_S)
        if self.restart_at is not None and now >= self.restart_at:
            self.restarts += 1
            self.start()


def run_all(config_path: Path, config: Config) -> int:
    bridge_config = prepare_bridge(config)
    # Children in sessions of their own: a terminal's Ctrl-C reaches only this launcher,
    # which stops them once each, bridge first (see _shutdown).
    hs = subprocess.Popen([_bin("homeserver"), "run", "--config", str(config_path)], start_new_session=True)
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
        return _shutdown([hs], hs.poll() or 1)
    logger.info("homeserver running (pid %d)", hs.pid)
    bridge = BridgeSupervisor(bridge_config) if bridge_config is not None else None
    if bridge is not None:
        bridge.start()
    code = 0
    while not stopping:
        hs_code = hs.poll()
        if hs_code is not None:
            logger.error("the homeserver %s; stopping everything", describe_exit(hs_code))
            code = 1
            break
        if bridge is not None:
            bridge.poll()
        time.sleep(0.2)
    procs = ([bridge.proc] if bridge is not None and bridge.proc is not None else []) + [hs]
    return _shutdown(procs, code)


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
