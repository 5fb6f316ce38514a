"""The federation parts of one server process, attached as `hs.federation`."""
from __future__ import annotations

from typing import TYPE_CHECKING

from homeserver.federation.client import FederationClient
from homeserver.federation.exposure import Exposure
from homeserver.federation.http_client import Agents
from homeserver.federation.keyring import KeyRing

if TYPE_CHECKING:
    from homeserver.server import HomeServer


class Federation:
    def __init__(self, hs: "HomeServer") -> None:
        self.hs = hs
        self.agents = Agents(hs.config)
        self.client = FederationClient(hs, self.agents)
        self.keyring = KeyRing(hs, self.client)
        self.exposure = Exposure(hs)

    async def start(self) -> None:
        pass

    def origin_seen(self, server_name: str) -> None:
        """A signed request from `server_name` arrived: it is up."""

    def stop(self) -> None:
        pass
