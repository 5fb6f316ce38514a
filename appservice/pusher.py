"""Pushes events to one application service as transactions, strictly in stream order.

The events table is the queue: the service's delivered position is persisted, a
transaction's content (its event ids) is persisted before the first attempt, and a
failed transaction is retried with the same id and the same events, with backoff, until
the service answers 200. A restart or a long outage loses nothing. Transaction ids are
one persisted increasing integer per service, shared by event and ephemeral-only
transactions: some frameworks accept only digits, and many drop an id they have seen.
Woken by the persist path; it reads Postgres only when there is something newer than its
position."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from twisted.internet import defer, reactor, task

from appservice.queries import call
from homeserver import metrics
from appservice.registration import Registration
from homeserver.serialize import serialize_event
from storage import appservice as as_store

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)
BATCH = 100
MAX_BACKOFF_S = 10.0
MAX_EPHEMERAL = 500


@dataclass
class _Txn:
    """One transaction: its content is fixed at the first attempt, so a retry carries the
    same id and the same data."""
    txn_id: str
    upto: int | None          # stream position of its last event; None: ephemeral only
    event_ids: list[str]
    ephemeral: list[dict]


class Pusher:
    def __init__(self, hs: "HomeServer", reg: Registration) -> None:
        self.hs = hs
        self.reg = reg
        self.last_stream = 0
        self._pending: _Txn | None = None
        self._ephemeral: list[dict] = []
        self._running = False
        self._nudged = False
        self._stopped = False
        self.delivered_txns = 0
        self.failing = False  # the last attempt failed; retrying with backoff
        self._idle: list[defer.Deferred] = []
        self._sleep: defer.Deferred | None = None

    async def start(self) -> None:
        last, txn, upto, ids = await self.hs.db.run(
            as_store.load_state, self.reg.id, self.hs.persister.max_stream_ordering)
        self.last_stream = last
        if txn is not None and upto is not None and ids is not None:
            self._pending = _Txn(txn, upto, ids, [])
        self.nudge()

    def stop(self) -> None:
        self._stopped = True
        if self._sleep is not None:
            self._sleep.cancel()

    def wait_stopped(self) -> defer.Deferred:
        """After stop(): fires when the transaction in flight (if any) has finished and its
        outcome is stored, so a restart resumes exactly where this process left off."""
        if not self._running:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._idle.append(d)
        return d

    def nudge(self) -> None:
        if not self.reg.url or self._stopped:
            return
        if self._running:
            self._nudged = True  # looked at again before the loop may finish
            return
        self._running = True
        defer.ensureDeferred(self._run()).addErrback(self._crashed)

    def _crashed(self, failure) -> None:
        logger.error("pusher for %s stopped: %s", self.reg.id, failure.getTraceback())
        self._running = False

    def wants_ephemeral(self, event: dict) -> bool:
        return self.reg.receive_ephemeral and self._ephemeral_interesting(event)

    def add_ephemeral(self, event: dict) -> None:
        if not self.wants_ephemeral(event):
            return
        self._ephemeral.append(event)
        del self._ephemeral[:-MAX_EPHEMERAL]  # ephemeral data may be dropped, never events
        self.nudge()

    async def _run(self) -> None:
        try:
            backoff = 0.5
            while not self._stopped:
                self._nudged = False
                if self._pending is None:
                    self._pending = await self._next_transaction()
                    if self._pending is None:
                        if self._nudged:
                            continue
                        return
                txn = self._pending
                if await self._send(txn):
                    if txn.upto is not None:
                        await self.hs.db.run(as_store.delivered, self.reg.id, txn.upto)
                        self.last_stream = txn.upto
                    self._pending = None
                    self.delivered_txns += 1
                    backoff = 0.5
                else:
                    await self._wait(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF_S)
        finally:
            self._running = False
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    async def _wait(self, seconds: float) -> None:
        self._sleep = task.deferLater(reactor, seconds, lambda: None)
        try:
            await self._sleep
        except defer.CancelledError:  # stop() cut the pause short
            pass
        finally:
            self._sleep = None

    async def _next_transaction(self) -> _Txn | None:
        """The next transaction: the interesting events after our position (persisted as
        pending before the first attempt) with the ephemeral data queued so far, or the
        queued ephemeral data alone. None when there is nothing to send. Every transaction
        takes the next number of the service's persisted counter as its id."""
        head = self.hs.persister.max_stream_ordering
        while self.last_stream < head:
            rows = await self.hs.db.run(as_store.events_after, self.last_stream, head, BATCH)
            if not rows:
                break
            upto = rows[-1][0]
            ids = await self._interesting([r[1] for r in rows], list({r[2] for r in rows}))
            if ids:
                txn_id = await self.hs.db.run(as_store.set_pending, self.reg.id, upto, ids)
                return _Txn(txn_id, upto, ids, self._take_ephemeral())
            await self.hs.db.run(as_store.delivered, self.reg.id, upto)
            self.last_stream = upto
        if not self._ephemeral:
            return None
        txn_id = await self.hs.db.run(as_store.next_txn_id, self.reg.id)
        return _Txn(txn_id, None, [], self._take_ephemeral())

    def _take_ephemeral(self) -> list[dict]:
        ephemeral, self._ephemeral = self._ephemeral, []
        return ephemeral

    async def _interesting(self, event_ids: list[str], room_ids: list[str]) -> list[str]:
        reg = self.reg
        aliases = await self.hs.db.run(as_store.aliases_of_rooms, room_ids) if reg.namespaces.aliases else {}
        rooms_of_interest = set()
        for room_id in room_ids:
            head = await self.hs.room_heads.get(room_id)
            members = head.members.items() if head else ()
            if reg.is_room_in_namespace(room_id) or any(reg.is_alias_in_namespace(a) for a in aliases.get(room_id, [])) \
                    or any(m in ("join", "invite") and reg.is_user_in_namespace(u) for u, m in members):
                rooms_of_interest.add(room_id)
        events = await self.hs.event_cache.get_many(event_ids)
        out = []
        for eid in event_ids:
            ev = events.get(eid)
            if ev is None:
                continue
            if ev.room_id in rooms_of_interest or reg.is_user_in_namespace(ev.sender) or (
                    ev.type == "m.room.member" and reg.is_user_in_namespace(ev.state_key or "")):
                out.append(eid)
        return out

    def _ephemeral_interesting(self, event: dict) -> bool:
        reg = self.reg
        if event["type"] == "m.presence":
            return reg.is_user_in_namespace(event.get("sender", ""))
        head = self.hs.room_heads.peek(event.get("room_id", ""))
        if head is None:
            return False
        if event["type"] == "m.receipt":
            private_users = [u for receipts in event["content"].values()
                             for u in receipts.get("m.read.private", {})]
            if private_users and not all(reg.is_user_in_namespace(u) for u in private_users):
                return False  # private receipts only for the service's own users
        return reg.is_room_in_namespace(head.room_id) or any(
            m == "join" and reg.is_user_in_namespace(u) for u, m in head.members.items())

    async def _send(self, txn: _Txn) -> bool:
        found = await self.hs.event_cache.get_many(txn.event_ids)
        events = [found[e] for e in txn.event_ids if e in found]
        redactions = await self.hs.event_cache.get_many(
            [e.internal["redacted_by"] for e in events if e.internal.get("redacted_by")])
        body: dict = {"events": [serialize_event(e, None, redactions.get(e.internal.get("redacted_by") or ""))
                                 for e in events]}
        if txn.ephemeral:
            body["ephemeral"] = txn.ephemeral
            body["de.sorunome.msc2409.ephemeral"] = txn.ephemeral  # the unstable name older services read
        return await self._put(txn.txn_id, body)

    async def _put(self, txn_id: str, body: dict) -> bool:
        try:
            code, content = await call(self.reg, "PUT", f"/_matrix/app/v1/transactions/{txn_id}", body, timeout=30)
        except Exception as e:
            logger.warning("transaction %s to %s failed: %s", txn_id, self.reg.id, e)
            return self._outcome(False)
        if code != 200:
            logger.warning("transaction %s to %s answered %d: %s", txn_id, self.reg.id, code, content[:200])
            return self._outcome(False)
        return self._outcome(True)

    def _outcome(self, ok: bool) -> bool:
        self.failing = not ok
        metrics.APPSERVICE_TRANSACTIONS.labels(self.reg.id, "delivered" if ok else "failed").inc()
        return ok

