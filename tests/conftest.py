"""Shared fixtures: one real server (on its own embedded PostgreSQL) per test session."""
from __future__ import annotations

import itertools
import uuid

import pytest

from tests.server_harness import Http, ServerProcess

_counter = itertools.count()


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("hs"))
    srv.start()
    yield srv
    srv.stop()
    srv.stop_postgres()


@pytest.fixture
def http(server) -> Http:
    return Http(server.base_url)


@pytest.fixture
def unique():
    """A fresh lowercase name per call, so tests sharing a server never collide."""
    def make(prefix: str = "u") -> str:
        return f"{prefix}{next(_counter)}x{uuid.uuid4().hex[:6]}"
    return make
