"""Shared fixtures: one real server (on its own embedded PostgreSQL) per test session."""
from __future__ import annotations

import itertools
import uuid

import pytest

from tests.server_harness import Http, ServerProcess, serving

_counter = itertools.count()


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    # Short presence timers so "goes offline when the user stops syncing" is quick to see.
    with serving(ServerProcess(tmp_path_factory.mktemp("hs"),
                               extra_config="presence:\n  offline_after_ms: 1500\n")) as srv:
        yield srv


@pytest.fixture
def own_server(tmp_path):
    """A fresh server of the test's own, for tests that stop, break or fill it."""
    with serving(ServerProcess(tmp_path / "hs")) as srv:
        yield srv


@pytest.fixture
def http(server) -> Http:
    return Http(server.base_url)


@pytest.fixture
def unique():
    """A fresh lowercase name per call, so tests sharing a server never collide."""
    def make(prefix: str = "u") -> str:
        return f"{prefix}{next(_counter)}x{uuid.uuid4().hex[:6]}"
    return make
