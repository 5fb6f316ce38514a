"""A real server with a server admin, and users placed in tenants by that admin through
the admin API: the setting for tests of features that must respect the tenant walls."""
from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager
from typing import Iterator

from tests.server_harness import REPO, Http, ServerProcess

V1 = "/_matrix/client/v1"
V3 = "/_matrix/client/v3"


class World:
    def __init__(self, srv: ServerProcess, admin: Http) -> None:
        self.srv = srv
        self.admin = admin

    def user(self, name: str, tenant: str | None) -> Http:
        """Register `name` and put them in `tenant` (None: no tenant)."""
        reg = Http(self.srv.base_url).register(name)
        user = Http(self.srv.base_url, reg["access_token"])
        user.user_id = reg["user_id"]
        if tenant is not None:
            status, body = self.admin.request(
                "PUT", f"/_homeserver/admin/v1/users/{reg['user_id']}/tenant", {"tenant_id": tenant})
            assert status == 200, body
        return user

    def tenant_admin(self, name: str, tenant: str) -> Http:
        """Register `name` in `tenant` and make them that tenant's admin."""
        user = self.user(name, tenant)
        status, body = self.admin.request("PUT", f"/_homeserver/admin/v1/users/{user.user_id}/admin_tenant",
                                          {"admin_tenant": tenant})
        assert status == 200, body
        return user


@contextmanager
def running_world(data_dir, extra_config: str = "") -> Iterator[World]:
    srv = ServerProcess(data_dir, extra_config=extra_config)
    srv.write_config()
    subprocess.run([sys.executable, "-m", "homeserver.cli", "register-user", "admin", "--password",
                    "adm-pw", "--admin", "--config", str(srv.config_path)],
                   cwd=REPO, check=True, capture_output=True)
    srv.start()
    try:
        _, login = Http(srv.base_url).request(
            "POST", f"{V3}/login", {"type": "m.login.password", "user": "admin", "password": "adm-pw"})
        yield World(srv, Http(srv.base_url, login["access_token"]))
    finally:
        srv.stop()
        srv.stop_postgres()


def create_room(user: Http, **body) -> str:
    status, room = user.request("POST", f"{V3}/createRoom", body)
    assert status == 200, room
    return room["room_id"]


def put_state(user: Http, room_id: str, event_type: str, content: dict, state_key: str = "") -> str:
    status, body = user.request("PUT", f"{V3}/rooms/{room_id}/state/{event_type}/{state_key}", content)
    assert status == 200, body
    return body["event_id"]


def sync(user: Http, since: str | None = None) -> dict:
    query = "?timeout=0" + (f"&since={since}" if since else "")
    status, body = user.request("GET", f"{V3}/sync{query}")
    assert status == 200, body
    return body
