"""The federation parts of one server process, attached as `hs.federation` when
`federation.enabled` is true."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from homeserver.federation.backfill import Backfill
from homeserver.federation.client import FederationClient
from homeserver.federation.exposure import Exposure
from homeserver.federation.http_client import Agents
from homeserver.federation.inbound import InboundEvents
from homeserver.federation.keyring import KeyRing
from homeserver.federation.membership import FederatedMembership
from homeserver.federation.remote_queries import RemoteQueries
from homeserver.federation.sender import Sender
from homeserver.federation.serving import Serving
from homeserver.federation.transactions import Transactions

if TYPE_CHECKING:
    from homeserver.server import HomeServer


class Federation:
    def __init__(self, hs: "HomeServer") -> None:
        self.hs = hs
        self.agents = Agents(hs.config)
        self.client = FederationClient(hs, self.agents)
        self.keyring = KeyRing(hs, self.client)
        self.exposure = Exposure(hs)
        self.inbound = InboundEvents(hs, self)
        self.serving = Serving(hs, self)
        self.transactions = Transactions(hs, self)
        self.sender = Sender(hs, self)
        self.membership = FederatedMembership(hs, self)
        self.backfill = Backfill(hs, self)
        self.queries = RemoteQueries(hs, self)

    async def start(self) -> None:
        self.hs.persister.add_listener(self.sender.on_events)

    async def attach_sync(self, sync: Any) -> None:
        """Once the sync engine exists: send the local users' ephemeral updates, then
        start the outbound queues (catching up on what a stop left unqueued)."""
        sync.ephemeral_listeners.append(self.sender.on_ephemeral)
        sync.device_lists.listeners.append(self.sender.on_device_list_change)
        await self.sender.start()

    def origin_seen(self, server_name: str) -> None:
        """A signed request from `server_name` arrived: it is up."""
        self.sender.peer_alive(server_name)

    async def send_to_device(self, sender: str, sender_device: str, event_type: str, txn_id: str,
                             messages: dict[str, dict]) -> None:
        """To-device messages for other servers' users (tenant users' stay here unless
        their tenant is federated)."""
        if not self.exposure.tenant_open(await self.hs.tenancy.tenant_of(sender)):
            return
        self.sender.send_to_device(sender, event_type, f"{sender_device}-{txn_id}", messages)

    def stop(self) -> None:
        self.sender.stop()
