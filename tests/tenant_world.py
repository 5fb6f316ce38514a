"""A real server with a server admin, and users placed in tenants by that admin through
the admin API: the setting for tests of features that must respect the tenant walls."""
from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager
from typing import Iterator

import pytest

from tests.server_harness import REPO, Http, ServerProcess, new_user, serving

V1 = "/_matrix/client/v1"
V3 = "/_matrix/client/v3"


class World:
    def __init__(self, srv: ServerProcess, admin: Http) -> None:
        self.srv = srv
        self.admin = admin

    def user(self, name: str, tenant: str | None, password: str = "secret-pw") -> Http:
        """Register `name` and put them in `tenant` (None: no tenant)."""
        user = new_user(self.srv.base_url, name, password)
        if tenant is not None:
            status, body = self.admin.request(
                "PUT", f"/_homeserver/admin/v1/users/{user.user_id}/tenant", {"tenant_id": tenant})
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
    """A server (its config: the test defaults and `extra_config`) with a server admin
    `admin` registered through the CLI, and logged in."""
    srv = ServerProcess(data_dir, extra_config=extra_config)
    srv.write_config()
    subprocess.run([sys.executable, "-m", "homeserver.cli", "register-user", "admin", "--password",
                    "adm-pw", "--admin", "--config", str(srv.config_path)],
                   cwd=REPO, check=True, capture_output=True)
    with serving(srv):
        status, login = Http(srv.base_url).request(
            "POST", f"{V3}/login", {"type": "m.login.password", "user": "admin", "password": "adm-pw"})
        assert status == 200, login
        admin = Http(srv.base_url, login["access_token"])
        admin.user_id, admin.device_id = login["user_id"], login["device_id"]
        yield World(srv, admin)


def module_world(name: str, extra_config: str = ""):
    """Fixtures for a test module whose tests share one world: `world` (module scope) and
    `srv` and `admin`, its server and its admin's client. In the module:
    `world, srv, admin = module_world("name")`."""
    @pytest.fixture(scope="module")
    def world(tmp_path_factory) -> Iterator[World]:
        with running_world(tmp_path_factory.mktemp(name), extra_config) as w:
            yield w

    @pytest.fixture
    def srv(world: World) -> ServerProcess:
        return world.srv

    @pytest.fixture
    def admin(world: World) -> Http:
        return world.admin

    return world, srv, admin


def create_room(user: Http, **body) -> str:
    status, room = user.request("POST", f"{V3}/createRoom", body)
    assert status == 200, room
    return room["room_id"]


def joined_room(owner: Http, *members: Http, invite: bool = True, **body) -> str:
    """A room `owner` creates, inviting `members` (unless `invite` is false: then the room
    must be public), who join it."""
    if invite:
        body = {"invite": [m.user_id for m in members], **body}
    room_id = create_room(owner, **body)
    for member in members:
        status, resp = member.request("POST", f"{V3}/rooms/{room_id}/join", {})
        assert status == 200, resp
    return room_id


def put_state(user: Http, room_id: str, event_type: str, content: dict, state_key: str = "") -> str:
    status, body = user.request("PUT", f"{V3}/rooms/{room_id}/state/{event_type}/{state_key}", content)
    assert status == 200, body
    return body["event_id"]


def sync(user: Http, since: str | None = None) -> dict:
    query = "?timeout=0" + (f"&since={since}" if since else "")
    status, body = user.request("GET", f"{V3}/sync{query}")
    assert status == 200, body
    return body
