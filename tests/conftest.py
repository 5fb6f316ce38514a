"""Shared fixtures: one real server (on its own embedded PostgreSQL) per test session."""
from __future__ import annotations

import itertools
import uuid

import pytest

from tests.server_harness import Http, ServerProcess

_counter = itertools.count()


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    # Short presence timers so "goes offline when the user stops syncing" is quick to see.
    srv = ServerProcess(tmp_path_factory.mktemp("hs"),
                        extra_config="presence:\n  offline_after_ms: 1500\n")
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
