"""Outbound webhook: every message in a bridged room is POSTed to the ERP.

Delivery is at least once and in order per room. Messages are queued durably
(erp_bridge.outbox) before the homeserver's transaction is acknowledged; one worker per
room sends the room's oldest queued message, deletes it on a 2xx answer, and otherwise
retries the same message with exponential backoff (capped), so a later message of a room
never overtakes an earlier one. Rooms do not wait for each other.

Each POST carries
    Content-Type: application/json
    X-ERP-Signature: sha256=<hex HMAC-SHA256 of the raw body, keyed with erp.webhook_secret>
    Idempotency-Key: <the Matrix event id>   (the same on every retry of a message)
and the body is fixed when the message is queued, so every retry sends the same bytes.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any, Callable

import treq
from twisted.internet import defer, reactor
from twisted.internet.interfaces import IReactorTime
from twisted.web.client import HTTPConnectionPool

from appservice.erp_bridge import store
from appservice.erp_bridge.db import Cursor, Database

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-ERP-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
PAYLOAD_TYPE = "io.erpchat.message"
ERP_TXN_KEY = "io.erpchat.erp_txn_id"


def sign(secret: str, body: bytes) -> str:
    """The X-ERP-Signature header value for a raw body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """What the ERP does with the header (constant-time compare)."""
    return bool(header) and hmac.compare_digest(sign(secret, body), header.strip())


def backoff_delays(initial: float, cap: float):
    """initial, 2*initial, 4*initial, ... capped at `cap`."""
    delay = initial
    while True:
        yield min(delay, cap)
        delay = min(delay * 2, cap)


def build_payload(*, seq: int, event: dict, room: store.Room, sender_erp_id: str | None,
                  sender_kind: str, origin: str, erp_txn_id: str | None) -> dict:
    content = event.get("content") or {}
    obj = ({"type": room.object_type, "id": room.object_id} if room.kind == "object" else None)
    return {
        "type": PAYLOAD_TYPE,
        "idempotency_key": event["event_id"],
        "sequence": seq,
        "tenant_id": room.tenant_id,
        "object": obj,
        "room": {"room_id": room.room_id, "kind": room.kind, "alias": room.alias},
        "event_id": event["event_id"],
        "sender": {"user_id": event.get("sender"), "erp_user_id": sender_erp_id, "kind": sender_kind},
        "origin": origin,
        "erp_txn_id": erp_txn_id,
        "msgtype": content.get("msgtype"),
        "body": content.get("body"),
        "content": content,
        "origin_server_ts": event.get("origin_server_ts"),
    }


def queue_transaction(cur: Cursor, txn_id: str, events: list[Any], queue: bool) -> list[str] | None:
    """In one database transaction: take in an application-service transaction and queue
    the messages of bridged rooms for the webhook. None if the transaction was already
    taken in (a homeserver retry); else the rooms that got new messages."""
    if not store.take_transaction(cur, txn_id, len(events)):
        return None
    rooms: list[str] = []
    if not queue:
        return rooms
    for ev in events:
        if not isinstance(ev, dict) or ev.get("type") != "m.room.message" or "state_key" in ev:
            continue
        if not isinstance(ev.get("event_id"), str) or not isinstance(ev.get("room_id"), str):
            continue
        content = ev.get("content")
        if not isinstance(content, dict) or not content:  # redacted: nothing to deliver
            continue
        room = store.get_room(cur, ev["room_id"])
        if room is None or room.kind == "space":
            continue
        sender = ev.get("sender", "")
        user = store.get_user_by_mxid(cur, sender)
        if user is not None:
            sender_kind, sender_erp_id = "erp_user", user.erp_user_id
        elif store.get_tenant_by_bot(cur, sender) is not None:
            sender_kind, sender_erp_id = "bridge_bot", None
        else:
            sender_kind, sender_erp_id = "matrix_user", None
        # "erp" only if the bridge really posted it for the ERP: the content marker must
        # name a message the bridge recorded for this room and sender (a user cannot
        # make their own message look like it came from the ERP).
        origin, erp_txn_id = "matrix", None
        marker = content.get(ERP_TXN_KEY)
        if isinstance(marker, str) and room.kind == "object":
            posted = store.get_erp_message(cur, room.object_type, room.object_id, marker)
            if posted is not None and posted.sender_user_id == sender and \
                    posted.event_id in (None, ev["event_id"]):
                origin, erp_txn_id = "erp", marker
        seq = store.next_outbox_seq(cur)
        body = json.dumps(build_payload(seq=seq, event=ev, room=room, sender_erp_id=sender_erp_id,
                                        sender_kind=sender_kind, origin=origin,
                                        erp_txn_id=erp_txn_id),
                          ensure_ascii=False, separators=(",", ":"))
        if store.enqueue_outbox(cur, seq, room.room_id, ev["event_id"], body):
            rooms.append(room.room_id)
    return rooms


class WebhookSender:
    def __init__(self, db: Database, url: str, secret: str, *, timeout_s: float = 10.0,
                 initial_backoff_s: float = 0.5, max_backoff_s: float = 10.0,
                 clock: IReactorTime = reactor, safety_scan_s: float = 30.0,
                 post: Callable[..., Any] | None = None) -> None:
        self.db = db
        self.url = url
        self.secret = secret
        self.timeout_s = timeout_s
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.clock = clock
        self.safety_scan_s = safety_scan_s
        self._post_fn = post or self._post_http
        self._active: dict[str, defer.Deferred] = {}
        self._rewake: set[str] = set()
        self._stopping = False
        self._sleeps: set[defer.Deferred] = set()
        self._scan_call = None
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self.delivered = 0

    async def start(self) -> None:
        await self._scan()

    def stop(self) -> None:
        self._stopping = True
        if self._scan_call is not None and self._scan_call.active():
            self._scan_call.cancel()
        for d in list(self._sleeps):
            d.cancel()

    async def _scan(self) -> None:
        """Start a worker for every room with queued messages (at start-up, and now and then
        as a safety net; new messages wake their room directly)."""
        try:
            self.wake(await self.db.run(store.outbox_rooms))
        except Exception as e:
            logger.warning("webhook: cannot read the outbox: %s", e)
        if not self._stopping:
            self._scan_call = self.clock.callLater(
                self.safety_scan_s, lambda: defer.ensureDeferred(self._scan()))

    def wake(self, room_ids: list[str]) -> None:
        for room_id in room_ids:
            if self._stopping:
                return
            if room_id in self._active:
                self._rewake.add(room_id)
                continue
            d = defer.ensureDeferred(self._worker(room_id))
            d.addErrback(lambda f: logger.error("webhook worker failed: %s", f.getTraceback()))
            if not d.called:
                self._active[room_id] = d

    async def _worker(self, room_id: str) -> None:
        delays = backoff_delays(self.initial_backoff_s, self.max_backoff_s)
        try:
            while not self._stopping:
                try:
                    item = await self.db.run(store.outbox_head, room_id)
                except Exception as e:
                    logger.warning("webhook: database error, retrying: %s", e)
                    await self._sleep(next(delays))
                    continue
                if item is None:
                    if room_id in self._rewake:
                        self._rewake.discard(room_id)
                        continue
                    return
                self._rewake.discard(room_id)
                error = await self._deliver(item)
                try:
                    if error is None:
                        await self.db.run(store.outbox_delivered, item.seq)
                        logger.debug("webhook: delivered %s (seq %d)", item.event_id, item.seq)
                        self.delivered += 1
                        delays = backoff_delays(self.initial_backoff_s, self.max_backoff_s)
                        continue
                    await self.db.run(store.outbox_failed, item.seq, error)
                except Exception as e:
                    logger.warning("webhook: database error, retrying: %s", e)
                delay = next(delays)
                logger.info("webhook: delivery of %s failed (%s); retrying in %.1fs",
                            item.event_id, error, delay)
                await self._sleep(delay)
        except defer.CancelledError:
            pass
        finally:
            self._active.pop(room_id, None)

    async def _deliver(self, item: store.OutboxItem) -> str | None:
        """None on success, else a short description of the failure."""
        body = item.body.encode()
        headers = {
            "Content-Type": ["application/json"],
            SIGNATURE_HEADER: [sign(self.secret, body)],
            IDEMPOTENCY_HEADER: [item.event_id],
            "User-Agent": ["erp-bridge"],
        }
        try:
            status = await self._post_fn(self.url, body, headers)
        except Exception as e:
            return f"{e.__class__.__name__}: {e}"[:300]
        if 200 <= status < 300:
            return None
        return f"HTTP {status}"

    async def _post_http(self, url: str, body: bytes, headers: dict) -> int:
        resp = await treq.post(url, data=body, headers=headers, pool=self._pool,
                               timeout=self.timeout_s)
        await treq.content(resp)  # drain, so the connection can be reused
        return resp.code

    def _sleep(self, seconds: float) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred(lambda d: call.cancel() if call.active() else None)
        call = self.clock.callLater(seconds, lambda: d.called or d.callback(None))
        self._sleeps.add(d)
        d.addBoth(lambda r: (self._sleeps.discard(d), r)[1])
        return d

    async def close(self, grace_s: float = 5.0) -> None:
        """Stop; a delivery in flight may finish (and be recorded) within `grace_s`, so a
        clean shutdown does not cause a redelivery."""
        self.stop()
        pending = list(self._active.values())
        if pending:
            done = defer.DeferredList(pending, consumeErrors=True)
            timer = self.clock.callLater(grace_s, done.cancel)
            try:
                await done
            except defer.CancelledError:
                pass
            if timer.active():
                timer.cancel()
        await self._pool.closeCachedConnections()
