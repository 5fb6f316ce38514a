"""Inbound transactions (`PUT /send/{txnId}`): PDUs handed to `InboundEvents` room by room
(each room's PDUs in order, under its lock), EDUs applied to the sync engine's streams.
A transaction seen before is answered as the first time, without processing it again."""
from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from twisted.internet import defer

from homeserver.async_utils import Coalescer
from homeserver.federation.acl import server_allowed
from homeserver.federation.exposure import server_of
from homeserver.federation.inbound import PduError
from homeserver.federation.pdu_format import room_id_of
from storage import federation as store

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)
MAX_PDUS = 50
MAX_EDUS = 100
REMOTE_TYPING_TIMEOUT_MS = 30_000


class Transactions:
    def __init__(self, hs: "HomeServer", federation) -> None:
        self.hs = hs
        self.federation = federation
        self._running = Coalescer()

    async def on_send(self, origin: str, txn_id: str, body: dict) -> dict:
        key = (origin, txn_id)
        return await self._running.run(key, lambda: self._once(origin, txn_id, body))

    async def _once(self, origin: str, txn_id: str, body: dict) -> dict:
        seen = await self.hs.db.run(store.get_inbound_txn, origin, txn_id)
        if seen is not None:
            return json.loads(seen)
        started = time.monotonic()
        pdus = body.get("pdus") or []
        edus = body.get("edus") or []
        by_room: dict[str, list] = {}
        results: dict[str, dict] = {}
        for raw in pdus:
            room_id = room_id_of(raw)
            if room_id is None:
                continue  # nothing to key an answer by
            by_room.setdefault(room_id, []).append(raw)
        await defer.DeferredList([defer.ensureDeferred(self._room(origin, room_id, raws, results))
                                  for room_id, raws in by_room.items()], consumeErrors=True)
        for edu in edus:
            try:
                await self._edu(origin, edu)
            except Exception:
                logger.exception("EDU from %s failed", origin)
        response = {"pdus": results}
        await self.hs.db.run(store.put_inbound_txn, origin, txn_id, json.dumps(response), int(time.time() * 1000))
        logger.info("transaction %s from %s: %d PDUs (%d refused), %d EDUs in %.0f ms", txn_id, origin, len(pdus),
                    sum(1 for r in results.values() if r), len(edus), (time.monotonic() - started) * 1000)
        return response

    async def _room(self, origin: str, room_id: str, raws: list, results: dict) -> None:
        inbound = self.federation.inbound
        async with inbound.lock(room_id):
            for raw in raws:
                event_id = raw.get("event_id") if isinstance(raw, dict) else None
                try:
                    head = await self.hs.room_heads.get(room_id)
                    if head is None:
                        raise PduError("this server is not in the room")
                    if not server_allowed(origin, inbound.acl_of(head)):
                        raise PduError("your server is denied by the room's server ACL")
                    event = inbound.parse(head, raw)
                    event_id = event.event_id
                    await inbound.receive(origin, room_id, event)
                    results[event_id] = {}
                except PduError as e:
                    logger.info("PDU %s from %s in %s: %s", event_id, origin, room_id, e)
                    if isinstance(event_id, str):
                        results[event_id] = {"error": str(e)}
                except Exception as e:
                    logger.exception("PDU %s from %s in %s failed", event_id, origin, room_id)
                    if isinstance(event_id, str):
                        results[event_id] = {"error": f"internal error: {type(e).__name__}"}

    # ---- EDUs -------------------------------------------------------------------------

    def _from_origin(self, origin: str, user_id: Any) -> bool:
        return isinstance(user_id, str) and server_of(user_id) == origin

    async def _joined(self, room_id: Any, user_id: str) -> bool:
        if not isinstance(room_id, str):
            return False
        head = await self.hs.room_heads.get(room_id)
        return head is not None and head.membership_of(user_id) == "join" and \
            server_allowed(server_of(user_id), self.federation.inbound.acl_of(head))

    async def _edu(self, origin: str, edu: Any) -> None:
        if not isinstance(edu, dict) or not isinstance(edu.get("content"), dict):
            return
        kind, content = edu.get("edu_type"), edu["content"]
        sync = self.hs.sync
        if kind == "m.typing":
            user_id, room_id = content.get("user_id"), content.get("room_id")
            if self._from_origin(origin, user_id) and await self._joined(room_id, user_id):
                sync.typing.set_typing(room_id, user_id, content.get("typing") is True, REMOTE_TYPING_TIMEOUT_MS)
        elif kind == "m.receipt":
            for room_id, by_type in content.items():
                if not isinstance(by_type, dict):
                    continue
                for receipt_type, by_user in by_type.items():
                    if receipt_type not in ("m.read", "m.read.private") or not isinstance(by_user, dict):
                        continue
                    for user_id, receipt in by_user.items():
                        if not self._from_origin(origin, user_id) or not await self._joined(room_id, user_id):
                            continue
                        ids = receipt.get("event_ids") if isinstance(receipt, dict) else None
                        data = receipt.get("data") if isinstance(receipt, dict) else None
                        thread = data.get("thread_id") if isinstance(data, dict) else None
                        for event_id in ids if isinstance(ids, list) else []:
                            if isinstance(event_id, str):
                                await sync.receipts.put(room_id, receipt_type, user_id, event_id,
                                                        thread if isinstance(thread, str) else None)
        elif kind == "m.presence":
            for update in content.get("push") or []:
                if isinstance(update, dict) and self._from_origin(origin, update.get("user_id")) \
                        and self.hs.config.presence.enabled:
                    sync.presence.set_remote(update["user_id"], update)
        elif kind in ("m.device_list_update", "m.signing_key_update"):
            user_id = content.get("user_id")
            if self._from_origin(origin, user_id):
                await sync.device_lists.record_change(user_id)
        elif kind == "m.direct_to_device":
            sender = content.get("sender")
            messages = content.get("messages")
            message_id = content.get("message_id")
            event_type = content.get("type")
            if self._from_origin(origin, sender) and isinstance(messages, dict) and isinstance(event_type, str):
                local = {u: m for u, m in messages.items() if self.hs.accounts.is_mine(u)}
                await sync.to_device.send(sender, f"federation:{origin}", event_type,
                                          str(message_id or time.time()), local)
        # Unknown EDU types are ignored, as the spec asks.
