"""One homeserver (with the bridge's registration) + one bridge + one webhook receiver,
shared by the integration tests of a module."""
from __future__ import annotations

import pytest

from tests.erp_bridge.harness import Env, start_env, stop_env


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Env:
    e = start_env(tmp_path_factory.mktemp("erp"))
    yield e
    stop_env(e)
