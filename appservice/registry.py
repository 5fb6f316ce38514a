"""The registered application services: who a token belongs to, who owns a namespace,
and one transaction pusher per service. Attached to the server as `hs.appservices`."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from appservice.pusher import Pusher
from appservice.queries import Queries
from appservice.registration import Registration, load_all
from appservice.thirdparty import ThirdParty
from storage import accounts as accounts_store
from storage import appservice as as_store

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)


class AppServices:
    def __init__(self, hs: "HomeServer") -> None:
        self.hs = hs
        self.registrations: list[Registration] = load_all(hs.config.app_service_config_files)
        self._by_token = {r.as_token: r for r in self.registrations}
        self._by_id = {r.id: r for r in self.registrations}
        self.pushers = {r.id: Pusher(hs, r) for r in self.registrations}
        self.queries = Queries(hs, self.registrations)
        self.thirdparty = ThirdParty(self.registrations)
        self.pushing = True

    async def start(self, push: bool = True) -> None:
        """`push`: this process delivers the transactions (worker.jobs.appservices)."""
        self.pushing = push
        for reg in self.registrations:
            sender = reg.sender(self.hs.server_name)
            # The service's own bot user exists from the start, as the spec expects.
            if await self.hs.db.run(accounts_store.create_user, sender, None, False,
                                    int(time.time() * 1000), reg.sender_localpart):
                await self.hs.db.run(as_store.set_user_appservice, sender, reg.id)
            if not push:
                continue
            await self.pushers[reg.id].start()
            logger.info("application service %s: sender %s, pushing to %s", reg.id, sender, reg.url)

    def stop(self) -> None:
        for p in self.pushers.values():
            p.stop()

    def by_token(self, token: str) -> Registration | None:
        return self._by_token.get(token)

    def by_id(self, as_id: str) -> Registration | None:
        return self._by_id.get(as_id)

    def may_act_as(self, reg: Registration, user_id: str) -> bool:
        return user_id == reg.sender(self.hs.server_name) or reg.is_user_in_namespace(user_id)

    def exclusive_user_owner(self, user_id: str) -> Registration | None:
        for r in self.registrations:
            if r.is_user_in_namespace(user_id, exclusive_only=True):
                return r
        return None

    def exclusive_alias_owner(self, alias: str) -> Registration | None:
        for r in self.registrations:
            if r.is_alias_in_namespace(alias, exclusive_only=True):
                return r
        return None

    # ---- feeds from the rest of the server -------------------------------------------

    def on_events(self, events) -> None:
        if not self.pushing:
            return
        for p in self.pushers.values():
            p.nudge()

    def on_ephemeral(self, event: dict) -> None:
        if not self.pushing:
            return
        for p in self.pushers.values():
            p.add_ephemeral(event)
