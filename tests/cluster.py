"""Several server processes on one embedded PostgreSQL (docs/scaling.md): writers, a
sync process owning the per-user streams, client processes, each a real process with a
public and an internal listener."""
from __future__ import annotations

import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.server_harness import REPO, ServerProcess, free_port, launch, wait_until_up


@dataclass
class ClusterProcess(ServerProcess):
    """One process of the cluster; all of them log to one file, `log_path`."""
    log_path: Path | None = None

    def start(self, timeout: float = 60) -> None:
        if not self.config_path.exists():
            self.write_config()
        self.proc = launch("homeserver.cli", self.config_path, self.log_path or self.data_dir / "server.log")
        wait_until_up(self.proc, self.base_url + "/_matrix/client/versions", timeout, "server",
                      self.log_text)

    def log_text(self) -> str:
        try:
            return (self.log_path or self.data_dir / "server.log").read_text()[-8000:]
        except OSError:
            return ""


@dataclass
class Cluster:
    root: Path
    writers: list[str] = field(default_factory=lambda: ["w1", "w2"])
    sync: str = "sync1"
    # Sync processes besides the stream owner (`sync`), following its streams.
    readers: list[str] = field(default_factory=list)
    clients: list[str] = field(default_factory=lambda: ["client1"])
    extra_config: str = ""
    procs: dict[str, ServerProcess] = field(default_factory=dict)
    internal_ports: dict[str, int] = field(default_factory=dict)
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    @property
    def pgdata(self) -> Path:
        return self.root / "postgres"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres:@/postgres?host={self.pgdata}"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    @property
    def shared(self) -> Path:
        return self.root / "shared"

    def names(self) -> list[str]:
        return [*self.writers, self.sync, *self.readers, *self.clients]

    def role(self, name: str) -> str:
        return "writer" if name in self.writers else "sync" if name == self.sync or name in self.readers else "client"

    def start_postgres(self) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-c", "import sys, pgserver; pgserver.get_server(sys.argv[1], cleanup_mode=None)",
             str(self.pgdata.resolve())], cwd=REPO, check=True, capture_output=True, timeout=120)

    def stop_postgres(self) -> None:
        subprocess.run(
            [sys.executable, "-c", "import sys; from pathlib import Path; from storage.embedded import stop_postmaster;"
             " stop_postmaster(Path(sys.argv[1]))", str(self.pgdata)],
            cwd=REPO, capture_output=True, timeout=90)

    def config_for(self, name: str, port: int) -> str:
        instances = "".join(f"    {n}: http://127.0.0.1:{p}\n" for n, p in self.internal_ports.items())
        return (
            f"data_dir: {self.shared}\n"
            f"signing_key_path: {self.shared / 'signing.key'}\n"
            f"database:\n  dsn: \"{self.dsn}\"\n"
            "listeners:\n"
            f"  - {{port: {port}, bind_address: 127.0.0.1, resources: [client], x_forwarded: {self.role(name) != 'writer'}}}\n"
            f"  - {{port: {self.internal_ports[name]}, bind_address: 127.0.0.1, resources: [client, internal, metrics]}}\n"
            "worker:\n"
            f"  instance_name: {name}\n  role: {self.role(name)}\n"
            f"  instances:\n{instances}"
            f"  writers: [{', '.join(self.writers)}]\n  streams: {self.sync}\n"
            f"  internal_secret: {self.secret}\n"
            + self.extra_config)

    def single_process(self) -> ServerProcess:
        """A process of role main on the cluster's database and files: the deployment
        before it grew (start the PostgreSQL first)."""
        srv = ClusterProcess(self.root / "main", log_path=self.log_path)
        srv.extra_config = (f"data_dir: {self.shared}\nsigning_key_path: {self.shared / 'signing.key'}\n"
                            f"database:\n  dsn: \"{self.dsn}\"\n")
        return srv

    def start(self) -> None:
        self.shared.mkdir(parents=True, exist_ok=True)
        if not (self.pgdata / "postmaster.pid").exists():
            self.start_postgres()
        for name in self.names():
            self.internal_ports[name] = free_port()
        for name in self.names():  # the first writer applies the migrations alone
            srv = ClusterProcess(self.root / name, log_path=self.log_path)
            srv.extra_config = self.config_for(name, srv.port)
            self.procs[name] = srv
            srv.start()

    def add_writer(self, name: str) -> None:
        """Start one more writer while the others run; only its own config names it (the
        others find its internal URL in the database). It builds no room until the layout
        lists it (`homeserver writers --set`)."""
        self.writers.append(name)
        self.internal_ports[name] = free_port()
        srv = ClusterProcess(self.root / name, log_path=self.log_path)
        srv.extra_config = self.config_for(name, srv.port)
        self.procs[name] = srv
        srv.start()

    def writers_command(self, *args: str) -> subprocess.CompletedProcess:
        """`homeserver writers ...` with the config of the sync process."""
        return subprocess.run([sys.executable, "-m", "homeserver.cli", "writers", "--config",
                               str(self.procs[self.sync].config_path), *args],
                              cwd=REPO, capture_output=True, text=True, timeout=180)

    def restart(self, name: str) -> None:
        self.procs[name].start()

    def stop(self) -> None:
        for srv in self.procs.values():
            srv.stop()
        self.stop_postgres()

    def url(self, name: str) -> str:
        return self.procs[name].base_url
