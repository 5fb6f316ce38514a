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


def _forget_dead_handles(pgdata: Path) -> None:
    """pgserver stops PostgreSQL when its last user process lets go, counting users in a
    pid file. A server that was killed (SIGKILL, power loss) never let go, so without
    this its stale pid would keep PostgreSQL running after every later clean stop."""
    handles = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    alive = [p for p in pids if isinstance(p, int) and _alive(p)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


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
        if self._server is not None:
            try:
                self._server.cleanup()
            except Exception as e:  # a stop failure must not hide the real shutdown reason
                logger.warning("stopping embedded PostgreSQL failed: %s", e)
            self._server = None
