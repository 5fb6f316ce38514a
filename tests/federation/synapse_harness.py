"""A real Synapse on loopback, for interoperability tests: installed from PyPI into a
virtualenv cached under ~/.cache/erp-homeserver-tests/synapse-venv (ERP_HS_TEST_CACHE
overrides; created when missing), SQLite database, a client listener (HTTP) and a
federation listener (HTTPS with a certificate of the tests' CA, which it also trusts for
its peers: verification stays on). Loopback peers are allowed (ip_range_whitelist, and
off ip_range_blacklist since our server names are IP literals) and retries of a peer that
was down are quick."""
from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import yaml

from tests.federation.harness import make_certificate, test_ca
from tests.server_harness import free_port, terminate, wait_until_up

SYNAPSE_VERSION = os.environ.get("SYNAPSE_VERSION", "1.163.2")
BIG = {"per_second": 100000, "burst_count": 100000}


def synapse_python() -> Path:
    """The venv's python, installing Synapse into it the first time."""
    cache = Path(os.environ.get("ERP_HS_TEST_CACHE", Path.home() / ".cache" / "erp-homeserver-tests"))
    venv = cache / "synapse-venv"
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import synapse.app.homeserver"]
    cache.mkdir(parents=True, exist_ok=True)
    # Test workers run in parallel (pytest-xdist): one installs, the others wait for it.
    with open(cache / "synapse-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
            return python
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"matrix-synapse=={SYNAPSE_VERSION}"],
                       check=True, capture_output=True, timeout=1800)
    return python


@dataclass
class SynapseServer:
    data_dir: Path
    port: int = field(default_factory=free_port)
    fed_port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def server_name(self) -> str:
        return f"127.0.0.1:{self.fed_port}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "homeserver.yaml"

    def write_config(self, python: Path) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.config_path.exists():
            subprocess.run([str(python), "-m", "synapse.app.homeserver", "--server-name", self.server_name,
                            "--config-path", str(self.config_path), "--data-directory", str(self.data_dir),
                            "--generate-config", "--report-stats=no"], cwd=self.data_dir, check=True,
                           capture_output=True)
        cert, key = make_certificate(self.data_dir / "tls")
        config = yaml.safe_load(self.config_path.read_text())
        config.update({
            "pid_file": str(self.data_dir / "homeserver.pid"),
            "public_baseurl": self.base_url + "/",
            "listeners": [
                {"port": self.port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
                 "x_forwarded": False, "resources": [{"names": ["client"], "compress": False}]},
                {"port": self.fed_port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": True,
                 "resources": [{"names": ["federation"], "compress": False}]},
            ],
            "tls_certificate_path": str(cert),
            "tls_private_key_path": str(key),
            "federation_custom_ca_list": [str(test_ca()[0])],
            "federation_verify_certificates": True,
            # IP-literal server names (ours, 127.0.0.1:port) are checked against the block
            # list alone, before the allow list is consulted: loopback must be off it.
            "ip_range_whitelist": ["127.0.0.0/8"],
            "ip_range_blacklist": ["10.255.255.255/32"],
            "database": {"name": "sqlite3", "args": {"database": str(self.data_dir / "homeserver.db")}},
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "enable_registration": True,
            "enable_registration_without_verification": True,
            "report_stats": False,
            "presence": {"enabled": True},
            "allow_public_rooms_over_federation": True,
            "federation": {"destination_min_retry_interval": 500, "destination_retry_multiplier": 2,
                           "destination_max_retry_interval": 3000},
            "log_config": str(self.data_dir / "log.yaml"),
            "rc_message": BIG, "rc_registration": BIG, "rc_joins": {"local": BIG, "remote": BIG},
            "rc_joins_per_room": BIG, "rc_invites": {"per_room": BIG, "per_user": BIG, "per_issuer": BIG},
            "rc_login": {"address": BIG, "account": BIG, "failed_attempts": BIG},
            "rc_federation": {"window_size": 1000, "sleep_limit": 1000, "sleep_delay": 1, "reject_limit": 1000,
                              "concurrent": 100},
            "rc_presence": {"per_user": BIG}, "rc_key_requests": BIG, "rc_room_creation": BIG,
        })
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        (self.data_dir / "log.yaml").write_text(yaml.safe_dump({
            "version": 1,
            "formatters": {"precise": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
            "handlers": {"file": {"class": "logging.FileHandler", "formatter": "precise",
                                  "filename": str(self.data_dir / "server.log")}},
            "loggers": {"synapse.storage.SQL": {"level": "WARNING"}},
            "root": {"level": "INFO", "handlers": ["file"]},
            "disable_existing_loggers": False,
        }))

    def start(self, timeout: float = 180) -> None:
        python = synapse_python()
        self.write_config(python)
        log = open(self.data_dir / "stdout.log", "ab")
        self.proc = subprocess.Popen([str(python), "-m", "synapse.app.homeserver", "-c", str(self.config_path)],
                                     cwd=self.data_dir, stdout=log, stderr=subprocess.STDOUT)
        wait_until_up(self.proc, self.base_url + "/_matrix/client/versions", timeout, "synapse", self.log_text)

    def stop(self) -> None:
        terminate(self.proc)
        self.proc = None

    def signing_key(self):
        from signedjson.key import read_signing_keys
        with open(self.data_dir / f"{self.server_name}.signing.key") as f:
            return read_signing_keys(f)[0]

    def log_text(self) -> str:
        try:
            return ((self.data_dir / "stdout.log").read_text()[-3000:] +
                    (self.data_dir / "server.log").read_text()[-5000:])
        except OSError:
            return ""


@contextmanager
def synapse_serving(srv: SynapseServer) -> Iterator[SynapseServer]:
    """Start `srv`; stop it afterwards (as tests.server_harness.serving does for ours)."""
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
