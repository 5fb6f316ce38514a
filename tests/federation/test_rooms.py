"""Two instances of this server, started by the tests, sharing rooms over federation:
join by alias, messages both ways, typing, receipts, presence, profiles, leave and
rejoin, invites accepted and declined, backfill of history sent while a user was away,
and device keys for end-to-end encryption (tests/federation/scenarios.py)."""
from __future__ import annotations

import pytest

from tests.federation import scenarios
from tests.federation.harness import federated_pair


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    with federated_pair(tmp_path_factory, "rooms") as servers:
        yield servers


@pytest.mark.parametrize("scenario", scenarios.SCENARIOS)
def test_two_instances(pair, scenario):
    getattr(scenarios, scenario)(*pair)
