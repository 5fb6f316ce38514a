"""Backfill: when a client pages back past the oldest event we hold of a room shared with
other servers, ask them for the events before it (`/backfill`), check each like any
received event and store it as history (visible to pagination, not to /sync)."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from homeserver.async_utils import Coalescer
from homeserver.federation.client import FederationError, path
from homeserver.federation.exposure import servers_in_room
from homeserver.federation.inbound import PduError
from storage import federation as store

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)
MAX_BACKFILL = 100
NOTHING_MORE_S = 60.0  # after a backfill that brought nothing, do not ask again for a while


class Backfill:
    def __init__(self, hs: "HomeServer", federation) -> None:
        self.hs = hs
        self.federation = federation
        self._running = Coalescer()
        self._exhausted: dict[tuple[str, tuple[str, ...]], float] = {}

    async def fill(self, room_id: str, wanted: int, from_depth: int, page: list, short: bool) -> bool:
        """A client pages back from `from_depth` and got `page` (stored rows, deepest first;
        `short`: fewer than it asked for). If the room has a gap in that range (events whose
        prev events we lack), or the page ran out, fetch up to about `wanted` events there
        from the other servers. True if any arrived."""
        head = await self.hs.room_heads.get(room_id)
        if head is None:
            return False
        servers = sorted(servers_in_room(head, ("join", "invite", "leave")) - {self.hs.server_name})
        if not servers:
            return False  # nobody else to ask: no query at all for rooms of this server alone
        lowest = None if short or not page else page[-1].pdu.get("depth")
        starts = await self.hs.db.run(store.backward_extremities, room_id, from_depth, lowest, 5)
        if not starts:
            return False
        return await self._running.run(room_id, lambda: self._fill(room_id, wanted, servers, starts))

    async def _fill(self, room_id: str, wanted: int, servers: list[str], starts: list[str]) -> bool:
        head = await self.hs.room_heads.get(room_id)
        if head is None:
            return False
        key = (room_id, tuple(starts))
        if time.monotonic() - self._exhausted.get(key, -1e9) < NOTHING_MORE_S:
            return False
        inbound = self.federation.inbound
        rv = head.room_version
        limit = min(max(wanted, 10) * 2, MAX_BACKFILL)
        for server in servers:
            try:
                answer = await self.federation.client.get(
                    server, path("/_matrix/federation/v1/backfill/%s", room_id), {"v": starts, "limit": limit})
            except FederationError as e:
                logger.info("backfill of %s from %s failed: %s", room_id, server, e)
                continue
            events = inbound._parse_all(answer.get("pdus") if isinstance(answer, dict) else None, rv, room_id)
            statuses = await self.federation.inbound.statuses([e.event_id for e in events])
            new = [e for e in events if statuses.get(e.event_id, ("outlier",))[0] == "outlier"]
            accepted = 0
            async with inbound.lock(room_id):
                for ev in sorted(new, key=lambda e: (e.depth, e.event_id)):
                    try:
                        await inbound.verify_signatures(ev)
                        await inbound.accept(server, room_id, rv, ev, backfilled=True)
                        accepted += 1
                    except PduError as e:
                        logger.info("backfilled %s not accepted: %s", ev.event_id, e)
            if accepted:
                return True
        self._exhausted[key] = time.monotonic()
        return False
