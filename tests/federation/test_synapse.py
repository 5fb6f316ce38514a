"""This server and a real Synapse (started by the tests on loopback, installed from PyPI
on first use) sharing rooms, in both directions: Synapse's users in our rooms and our
users in Synapse's rooms (Synapse creates version 12 rooms, so state resolution v2.1 is
what runs there). The same scenarios as between two instances of this server
(tests/federation/scenarios.py)."""
from __future__ import annotations

import pytest

from tests.federation import scenarios
from tests.federation.harness import FederatedServer
from tests.federation.synapse_harness import SynapseServer, synapse_serving
from tests.server_harness import serving

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    with serving(FederatedServer(tmp_path_factory.mktemp("syn-ours"))) as ours, \
            synapse_serving(SynapseServer(tmp_path_factory.mktemp("syn-synapse"))) as synapse:
        yield ours, synapse


@pytest.mark.parametrize("direction", ["our room", "their room"])
@pytest.mark.parametrize("scenario", scenarios.SCENARIOS)
def test_with_synapse(servers, scenario, direction):
    ours, synapse = servers
    host, guest = (ours, synapse) if direction == "our room" else (synapse, ours)
    getattr(scenarios, scenario)(host, guest)
