"""The embedded default database: a real PostgreSQL from the `pgserver` package, kept in
the data directory, used when no DSN is configured."""
from __future__ import annotations

import json
import logging
import os
import stat
import warnings
from pathlib import Path

logger = logging.getLogger(__name__)


def _let_postgres_user_traverse(path: Path) -> None:
    """Run as root, pgserver starts PostgreSQL as an unprivileged user, which must be able
    to reach the data directory: give every parent directory the search bit for others."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def _handle_pids(pgdata: Path) -> list | None:
    try:
        return json.loads((pgdata / ".handle_pids.json").read_text())
    except (OSError, ValueError):
        return None


def _forget_dead_handles(pgdata: Path) -> None:
    """pgserver stops PostgreSQL when its last user process lets go, counting users in a
    pid file. A server that was killed (SIGKILL, power loss) never let go, so without
    this its stale pid would keep PostgreSQL running after every later clean stop."""
    pids = _handle_pids(pgdata)
    if pids is None:
        return
    alive = [p for p in pids if isinstance(p, int) and _alive(p)]
    if alive != pids:
        (pgdata / ".handle_pids.json").write_text(json.dumps(alive))


def stop_postmaster(pgdata: Path) -> None:
    """Stop whatever PostgreSQL runs in `pgdata` now (postmaster.pid), whoever started it."""
    from pgserver._commands import pg_ctl
    from pgserver.utils import PostmasterInfo

    try:
        info = PostmasterInfo.read_from_pgdata(pgdata)
    except (OSError, ValueError, AssertionError):  # a half-written pid file: starting up
        info = None
    if info is None or not info.is_running():
        return
    logger.info("stopping the PostgreSQL (pid %d) running in %s", info.pid, pgdata)
    pg_ctl(["-w", "stop", "-m", "fast"], pgdata=pgdata,
           user="pgserver" if os.geteuid() == 0 else None, timeout=60)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (data_dir / "postgres").resolve()
        self._server = None

    def start(self) -> str:
        """Start (or attach to an already running) cluster; return a libpq DSN."""
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            _let_postgres_user_traverse(self.pgdata)
        _forget_dead_handles(self.pgdata)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs complains about XDG_RUNTIME_DIR
            import pgserver  # imported lazily: only the embedded mode needs it

            self._server = pgserver.get_server(self.pgdata, cleanup_mode="stop")
        uri = self._server.get_uri()
        logger.info("embedded PostgreSQL running in %s", self.pgdata)
        return uri

    def stop(self) -> None:
        """Let go of the cluster; the last process to let go stops it."""
        if self._server is None:
            return
        try:
            self._server.cleanup()
            # pgserver stops only the postmaster it found at start; if PostgreSQL was
            # restarted meanwhile (by an operator, or a crash and restart), the running
            # one is another process: stop that too unless someone else still uses it.
            if not [p for p in _handle_pids(self.pgdata) or [] if isinstance(p, int) and _alive(p)]:
                stop_postmaster(self.pgdata)
        except Exception as e:  # a stop failure must not hide the real shutdown reason
            logger.warning("stopping embedded PostgreSQL failed: %s", e)
        self._server = None
