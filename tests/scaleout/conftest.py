"""The scale-out cluster of this package's tests: two writers, a sync process owning the
per-user streams and a second one following it (nginx sends each user to one of them), a
client process, all on one embedded PostgreSQL, behind nginx routed by
deploy/nginx/homeserver-routes.conf. (With several client processes a user reads
another user's write on theirs a few milliseconds after it was acknowledged; the
end-to-end flows below read each other's writes at once, as they may from one process.) The `server` fixture is the proxy, so tests
written for one process run unchanged against the cluster.

nginx comes from Debian (`nginx-light`): installed here when missing and this runs as
root, else the proxy tests are skipped with the reason."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests.cluster import Cluster
from tests.server_harness import REPO, free_port

ROUTES = REPO / "deploy" / "nginx" / "homeserver-routes.conf"
PROXY_HEADERS = REPO / "deploy" / "nginx" / "homeserver-proxy.conf"
USER_KEY = REPO / "deploy" / "nginx" / "homeserver-user-key.conf"


def _nginx() -> str | None:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-qq", "nginx-light"], env=env, capture_output=True,
                       timeout=600)
        found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    return found


@dataclass
class Proxy:
    """What tests written for one server use of it: `base_url` and `data_dir/server.log`
    (here the log every process of the cluster writes to)."""
    base_url: str
    data_dir: Path
    port: int
    cluster: Cluster


def nginx_config(root: Path, port: int, cluster: Cluster) -> str:
    routes = ROUTES.read_text().replace("/etc/nginx/homeserver-proxy.conf", str(PROXY_HEADERS))
    clients = "".join(f"    server 127.0.0.1:{cluster.procs[c].port};\n" for c in cluster.clients)
    syncers = "".join(f"    server 127.0.0.1:{cluster.procs[c].port};\n" for c in [cluster.sync, *cluster.readers])
    # As root nginx would run its workers as nobody, who cannot enter pytest's private
    # temporary directories.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return (
        f"{user}pid {root}/nginx.pid;\nerror_log {root}/nginx-error.log;\ndaemon off;\n"
        "worker_processes 1;\nevents { worker_connections 1024; }\n"
        "http {\n"
        f"  access_log off;\n  client_body_temp_path {root}/body;\n  proxy_temp_path {root}/proxy;\n"
        f"  fastcgi_temp_path {root}/fcgi;\n  uwsgi_temp_path {root}/uwsgi;\n  scgi_temp_path {root}/scgi;\n"
        f"  include {USER_KEY};\n"
        f"  upstream hs_syncers {{\n    hash $hs_user_key consistent;\n{syncers}    keepalive 16;\n  }}\n"
        f"  upstream hs_client {{\n    hash $hs_user_key consistent;\n{clients}    keepalive 16;\n  }}\n"
        f"  server {{\n    listen 127.0.0.1:{port};\n{routes}\n  }}\n"
        "}\n")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"), readers=["sync2"])
    try:
        c.start()
        yield c
    finally:
        c.stop()


@contextmanager
def proxy_in_front(cluster: Cluster, root: Path) -> Iterator[Proxy]:
    """nginx with the reference routes in front of `cluster` (skips the test without nginx)."""
    nginx = _nginx()
    if nginx is None:
        pytest.skip("nginx is not installed (Debian package nginx-light) and cannot be installed here")
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = root / "nginx.conf"
    conf.write_text(nginx_config(root, port, cluster))
    proc = subprocess.Popen([nginx, "-c", str(conf), "-p", str(root)], stdout=subprocess.DEVNULL,
                            stderr=open(root / "nginx.out", "wb"))
    try:
        deadline = time.time() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_matrix/client/versions", timeout=1)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError("nginx did not start:\n" + (root / "nginx.out").read_text()
                                       + (root / "nginx-error.log").read_text() if (root / "nginx-error.log").exists()
                                       else "")
                time.sleep(0.1)
        yield Proxy(f"http://127.0.0.1:{port}", cluster.root, port, cluster)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def server(cluster, tmp_path_factory):
    with proxy_in_front(cluster, tmp_path_factory.mktemp("nginx")) as proxy:
        yield proxy
