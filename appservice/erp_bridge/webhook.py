"""Outbound webhook: every change in a bridged room the ERP may care about is POSTed to
the ERP: messages, edits, deletions, reactions added and removed, members joining and
leaving.

Delivery is at least once and in order per room. Changes are queued durably
(erp_bridge.outbox) before the homeserver's transaction is acknowledged; one worker per
room sends the room's oldest queued change, deletes it on a 2xx answer, and otherwise
retries the same change with exponential backoff (capped), so a later change of a room
never overtakes an earlier one. Rooms do not wait for each other.

Each POST carries
    Content-Type: application/json
    X-ERP-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + raw body, keyed with erp.webhook_secret>
    Idempotency-Key: <the Matrix event id>   (the same on every retry of a change)
The body is fixed when the change is queued, so every retry sends the same bytes; the
timestamp is that of the attempt and inside the signed part, so the ERP can refuse a
replayed request whose timestamp is too old.

The same database transaction keeps the bridge's view of each room (membership, and an
index of messages and reactions for summaries), whether or not a webhook is configured.
"""
from __future__ import annotations

import copy
import hashlib
import hmac
import json
import logging
import time
from typing import Any, Callable

import treq
from twisted.internet import defer, reactor
from twisted.internet.interfaces import IReactorTime
from twisted.web.client import HTTPConnectionPool

from appservice.erp_bridge import store
from appservice.erp_bridge.db import Cursor, Database
from appservice.erp_bridge.media_links import MediaLinks
from appservice.erp_bridge.richtext import sanitize_html

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-ERP-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
ERP_TXN_KEY = "io.erpchat.erp_txn_id"
REPLAY_TOLERANCE_S = 300

MESSAGE = "io.erpchat.message"
EDIT = "io.erpchat.message.edit"
DELETION = "io.erpchat.message.deletion"
REACTION_ADDED = "io.erpchat.reaction.added"
REACTION_REMOVED = "io.erpchat.reaction.removed"
MEMBER_JOINED = "io.erpchat.member.joined"
MEMBER_LEFT = "io.erpchat.member.left"
FILE_MSGTYPES = ("m.file", "m.image", "m.video", "m.audio")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The X-ERP-Signature header value for a raw body sent at `timestamp`."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: str, body: bytes, header: str | None, now: float | None = None,
           tolerance_s: int = REPLAY_TOLERANCE_S) -> bool:
    """What the ERP does with the header: the signature matches (constant-time compare)
    and its timestamp is within `tolerance_s` of now."""
    if not header:
        return False
    parts = dict(p.split("=", 1) for p in header.strip().split(",") if "=" in p)
    try:
        timestamp = int(parts.get("t", ""))
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), f"t={timestamp},v1={parts.get('v1', '')}")


def backoff_delays(initial: float, cap: float):
    """initial, 2*initial, 4*initial, ... capped at `cap`."""
    delay = initial
    while True:
        yield min(delay, cap)
        delay = min(delay * 2, cap)


def clean_content(content: dict) -> dict:
    """The Matrix content with every formatted_body (also the edit's m.new_content)
    sanitized: the ERP may show it as HTML."""
    out = copy.deepcopy(content)
    for c in (out, out.get("m.new_content")):
        if isinstance(c, dict) and "formatted_body" in c:
            fb = c.get("formatted_body")
            c["formatted_body"] = sanitize_html(fb) if isinstance(fb, str) else None
    return out


def formatted_body(content: dict) -> str | None:
    """The sanitized HTML of a (cleaned) content, or None."""
    if content.get("format") == "org.matrix.custom.html" and isinstance(content.get("formatted_body"), str):
        return content["formatted_body"]
    return None


def relates_to(content: dict) -> dict:
    rel = content.get("m.relates_to")
    return rel if isinstance(rel, dict) else {}


def thread_root(content: dict) -> str | None:
    rel = relates_to(content)
    root = rel.get("event_id") if rel.get("rel_type") == "m.thread" else None
    return root if isinstance(root, str) else None


def in_reply_to(content: dict) -> str | None:
    reply = relates_to(content).get("m.in_reply_to")
    target = reply.get("event_id") if isinstance(reply, dict) else None
    return target if isinstance(target, str) else None


def attachment(content: dict, tenant_id: str, links: MediaLinks | None) -> dict | None:
    """A shared file's download link (signed, expiring) and what the message says of it."""
    url = content.get("url")
    if content.get("msgtype") not in FILE_MSGTYPES or not isinstance(url, str) or links is None:
        return None
    link = links.link(tenant_id, url)
    if link is None:
        return None
    info = content.get("info") if isinstance(content.get("info"), dict) else {}
    filename = content.get("filename") if isinstance(content.get("filename"), str) else content.get("body")
    return {"url": link[0], "expires_at": link[1], "content_uri": url, "filename": filename,
            "mimetype": info.get("mimetype"), "size": info.get("size")}


def message_fields(content: dict, tenant_id: str, links: MediaLinks | None) -> dict:
    """What the webhook and the message history say of a message's content."""
    clean = clean_content(content)
    return {
        "msgtype": clean.get("msgtype"),
        "body": clean.get("body"),
        "formatted_body": formatted_body(clean),
        "thread_root": thread_root(clean),
        "in_reply_to": in_reply_to(clean),
        "attachment": attachment(clean, tenant_id, links),
        "content": clean,
    }


def envelope(*, type_: str, seq: int, event: dict, room: store.Room, sender: dict) -> dict:
    obj = ({"type": room.object_type, "id": room.object_id} if room.kind == "object" else None)
    return {
        "type": type_,
        "idempotency_key": event["event_id"],
        "sequence": seq,
        "tenant_id": room.tenant_id,
        "object": obj,
        "room": {"room_id": room.room_id, "kind": room.kind, "alias": room.alias},
        "event_id": event["event_id"],
        "sender": sender,
        "origin_server_ts": event.get("origin_server_ts"),
    }


def _sender(cur: Cursor, user_id: str) -> dict:
    user = store.get_user_by_mxid(cur, user_id)
    if user is not None:
        return {"user_id": user_id, "erp_user_id": user.erp_user_id, "kind": "erp_user"}
    if store.get_tenant_by_bot(cur, user_id) is not None:
        return {"user_id": user_id, "erp_user_id": None, "kind": "bridge_bot"}
    return {"user_id": user_id, "erp_user_id": None, "kind": "matrix_user"}


def describe_event(cur: Cursor, ev: dict, room: store.Room,
                   links: MediaLinks | None) -> tuple[str, dict] | None:
    """Record what the event changes in the bridge's view of the room, and say what the
    ERP is told: (payload type, type-specific fields), or None for nothing."""
    etype, content = ev.get("type"), ev.get("content")
    sender = ev.get("sender", "")
    if not isinstance(content, dict):
        return None
    ts = ev.get("origin_server_ts") if isinstance(ev.get("origin_server_ts"), int) else 0
    if etype == "m.room.member":
        return _describe_membership(cur, ev, room, content)
    if "state_key" in ev:
        return None
    if etype == "m.room.message":
        if not content:  # redacted before it reached us
            return None
        rel = relates_to(content)
        if rel.get("rel_type") == "m.replace" and isinstance(rel.get("event_id"), str):
            new = content.get("m.new_content") if isinstance(content.get("m.new_content"), dict) else content
            fields = message_fields(new, room.tenant_id, links)
            fields.pop("thread_root")
            fields.pop("in_reply_to")
            return EDIT, {"edited_event_id": rel["event_id"], "new_content": fields.pop("content"), **fields}
        store.index_event(cur, ev["event_id"], room.room_id, "message", sender, ts,
                          thread_root=thread_root(content))
        origin, erp_txn_id = "matrix", None
        # "erp" only if the bridge really posted it for the ERP: the content marker must
        # name a message the bridge recorded for this room and sender (a user cannot
        # make their own message look like it came from the ERP).
        marker = content.get(ERP_TXN_KEY)
        if isinstance(marker, str) and room.kind == "object":
            posted = store.get_erp_message(cur, (room.tenant_id, room.object_type, room.object_id), marker)
            if posted is not None and posted.sender_user_id == sender and \
                    posted.event_id in (None, ev["event_id"]):
                origin, erp_txn_id = "erp", marker
        return MESSAGE, {"origin": origin, "erp_txn_id": erp_txn_id,
                         **message_fields(content, room.tenant_id, links)}
    if etype == "m.reaction":
        rel = relates_to(content)
        if rel.get("rel_type") != "m.annotation" or not isinstance(rel.get("event_id"), str) \
                or not isinstance(rel.get("key"), str):
            return None
        store.index_event(cur, ev["event_id"], room.room_id, "reaction", sender, ts,
                          target=rel["event_id"], key=rel["key"])
        return REACTION_ADDED, {"reacted_event_id": rel["event_id"], "key": rel["key"]}
    if etype == "m.room.redaction":
        redacts = ev.get("redacts") or content.get("redacts")
        if not isinstance(redacts, str):
            return None
        before = store.mark_redacted(cur, room.room_id, redacts)
        if before is not None and before.kind == "reaction":
            if before.redacted:
                return None
            return REACTION_REMOVED, {"reaction_event_id": redacts, "reacted_event_id": before.target,
                                      "key": before.reaction_key, "reactor": _sender(cur, before.sender)}
        return DELETION, {"redacted_event_id": redacts, "reason": content.get("reason")}
    return None


def _describe_membership(cur: Cursor, ev: dict, room: store.Room, content: dict):
    user_id = ev.get("state_key")
    membership = content.get("membership")
    if not isinstance(user_id, str) or not isinstance(membership, str):
        return None
    before = store.swap_membership(cur, room.room_id, user_id, membership)
    if before is None:
        prev = (ev.get("unsigned") or {}).get("prev_content") or {}
        before = prev.get("membership") if isinstance(prev, dict) else None
    if store.get_tenant_by_bot(cur, user_id) is not None:
        return None  # the tenant's bot is in every room from its creation
    member = _sender(cur, user_id)
    if membership == "join" and before != "join":
        return MEMBER_JOINED, {"member": member}
    if membership in ("leave", "ban") and before in ("join", None):
        by = ev.get("sender")
        return MEMBER_LEFT, {"member": member, "membership": membership,
                             "removed_by": _sender(cur, by) if by != user_id else None,
                             "reason": content.get("reason")}
    return None


def queue_transaction(cur: Cursor, txn_id: str, events: list[Any], queue: bool,
                      links: MediaLinks | None = None) -> list[str] | None:
    """In one database transaction: take in an application-service transaction, update
    the bridge's view of its rooms, and queue what the ERP is told for the webhook. None
    if the transaction was already taken in (a homeserver retry); else the rooms that got
    new deliveries."""
    if not store.take_transaction(cur, txn_id, len(events)):
        return None
    rooms: list[str] = []
    for ev in events:
        if not isinstance(ev, dict) or not isinstance(ev.get("event_id"), str) \
                or not isinstance(ev.get("room_id"), str) or not isinstance(ev.get("sender"), str):
            continue
        room = store.get_room(cur, ev["room_id"])
        if room is None or room.kind == "space":
            continue
        described = describe_event(cur, ev, room, links)
        if described is None or not queue:
            continue
        type_, fields = described
        seq = store.next_outbox_seq(cur)
        payload = envelope(type_=type_, seq=seq, event=ev, room=room, sender=_sender(cur, ev["sender"]))
        payload.update(fields)
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
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
            SIGNATURE_HEADER: [sign(self.secret, int(self.clock.seconds()), body)],
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
