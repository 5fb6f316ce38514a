"""Two instances of this server, started by the tests, sharing rooms over federation:
join by alias, messages both ways, typing, receipts, presence, profiles, leave and
rejoin, invites accepted and declined, backfill of history sent while a user was away,
and device keys for end-to-end encryption (tests/federation/scenarios.py)."""
from __future__ import annotations

import pytest

from tests.federation import scenarios
from tests.federation.harness import FederatedServer


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    a = FederatedServer(tmp_path_factory.mktemp("rooms-a"))
    b = FederatedServer(tmp_path_factory.mktemp("rooms-b"))
    a.start()
    b.start()
    yield a, b
    for s in (a, b):
        s.stop()
        s.stop_postgres()


@pytest.mark.parametrize("scenario", scenarios.SCENARIOS)
def test_two_instances(pair, scenario):
    getattr(scenarios, scenario)(*pair)
