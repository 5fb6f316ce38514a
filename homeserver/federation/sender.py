"""Outbound federation: one persisted queue per destination (`federation_outbox`), sent as
transactions of up to 50 PDUs and 100 EDUs, in order. A destination that fails is retried
after a pause that doubles from `min_retry_interval_ms` to `max_retry_interval_ms`, and at
once when it contacts us; nothing queued is dropped meanwhile, so a peer back from an
outage receives everything it missed, in order.

What goes in: this server's room events (persist listener) to every other server with a
joined member (and the target's server of a membership change), the local users' typing
(memory only: stale after a minute anyway), receipts, presence, device-list changes and
to-device messages. Local events committed but not yet queued when the process stopped
are queued at the next start (`federation_stream_position`)."""
from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, reactor, task

from homeserver.event import Event
from homeserver.federation.acl import server_allowed
from homeserver.federation.client import FederationError, path
from homeserver.federation.exposure import server_of, servers_in_room
from storage import federation as store

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)
MAX_PDUS = 50
MAX_EDUS = 100
CATCH_UP_BATCH = 500
POSITION_SAVE_S = 5.0  # how often the queued position of events with no destination is saved
NO_SEND = "federation_no_send"  # Event.internal flag: the event reached its servers another way


def _now() -> int:
    return int(time.time() * 1000)


class Sender:
    def __init__(self, hs: "HomeServer", federation) -> None:
        self.hs = hs
        self.federation = federation
        cfg = hs.config.federation
        self.min_retry_ms, self.max_retry_ms = cfg.min_retry_interval_ms, cfg.max_retry_interval_ms
        self._running: set[str] = set()
        self._again: set[str] = set()
        self._retry: dict[str, tuple[int, int]] = {}   # destination -> (interval, retry at)
        self._timers: dict[str, Any] = {}
        self._memory_edus: dict[str, list[dict]] = {}
        self._writes: defer.Deferred = defer.succeed(None)
        self._typing_sent: dict[str, set[str]] = {}
        self._memory_txn = 0
        self.sent_transactions = 0
        self._stopped = False
        self._unsaved_position = 0
        self._position_saver = task.LoopingCall(self._save_position)

    async def start(self) -> None:
        await self._catch_up()
        self._position_saver.start(POSITION_SAVE_S, now=False)
        for destination in await self.hs.db.run(store.destinations_with_queue):
            retry = await self.hs.db.run(store.get_retry, destination)
            if retry is not None:
                # After a restart, try once soon whatever the stored pause was.
                self._retry[destination] = (retry[0], _now() + self.min_retry_ms)
            self.kick(destination)

    def stop(self) -> None:
        self._stopped = True
        if self._position_saver.running:
            self._position_saver.stop()
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()

    async def _catch_up(self) -> None:
        """Queue local events committed after the recorded position (a crash between a
        commit and its queueing)."""
        position = await self.hs.db.run(store.queued_position)
        while True:
            rows = await self.hs.db.run(store.local_events_after, position, self.hs.server_name, CATCH_UP_BATCH)
            if not rows:
                return
            events = []
            for so, event_id, room_id in rows:
                ev = await self.hs.event_cache.get(event_id)
                if ev is not None:
                    events.append(ev)
            await self._queue_events(events, rows[-1][0])
            position = rows[-1][0]

    # ---- what goes in --------------------------------------------------------------

    def destinations_for_event(self, event: Event) -> set[str]:
        head = self.hs.room_heads.peek(event.room_id)
        servers = servers_in_room(head) if head is not None else set()
        if event.type == "m.room.member" and isinstance(event.state_key, str) \
                and event.membership in ("leave", "ban"):
            servers.add(server_of(event.state_key))  # the kicked/banned user's server hears of it
        acl = self.federation.inbound.acl_of(head) if head is not None else None
        return {s for s in servers if s and s != self.hs.server_name and server_allowed(s, acl)}

    def on_events(self, events: list[Event]) -> None:
        """Persist listener: queue this server's new events."""
        mine = [ev for ev in events if self.hs.accounts.is_mine(ev.sender) and not ev.internal.get(NO_SEND)]
        if not mine:
            return  # (the queued position only matters for our own events: no write at all)
        last = max((ev.stream_ordering or 0) for ev in mine)
        self._chain(lambda: self._queue_events(mine, last))

    async def _queue_events(self, events: list[Event], position: int | None) -> None:
        rows, destinations = [], set()
        for ev in events:
            for d in self.destinations_for_event(ev):
                rows.append((d, ev.event_id, None))
                destinations.add(d)
        if not rows:
            # Nothing to send (rooms of this server alone): the position is saved by the
            # timer, not with a write per event.
            if position is not None:
                self._unsaved_position = max(self._unsaved_position, position)
            return
        await self.hs.db.run(store.queue_outbound, rows, _now(), position)
        for d in destinations:
            self.kick(d)

    def forward(self, event: Event, exclude: set[str]) -> None:
        """Send another server's event on to the room's other servers (a join, leave or
        knock that reached us through send_join/send_leave/send_knock)."""
        destinations = self.destinations_for_event(event) - exclude
        rows = [(d, event.event_id, None) for d in destinations]

        async def write() -> None:
            await self.hs.db.run(store.queue_outbound, rows, _now(), None)
            for d in destinations:
                self.kick(d)
        self._chain(write)

    def _save_position(self) -> None:
        position, self._unsaved_position = self._unsaved_position, 0
        if position:
            self._chain(lambda: self.hs.db.run(store.queue_outbound, [], _now(), position))

    def _chain(self, fn) -> None:
        """Queue writes one after another, so a destination's queue keeps stream order."""
        def run(_):
            return defer.ensureDeferred(fn())

        def failed(f):
            logger.error("queueing for federation failed: %s", f.getTraceback())
        self._writes.addCallback(run).addErrback(failed)

    def queue_edu(self, destinations: set[str], edu_type: str, content: dict, persist: bool = True) -> None:
        destinations = {d for d in destinations if d and d != self.hs.server_name}
        if not destinations:
            return
        edu = {"edu_type": edu_type, "content": content}
        if not persist:
            for d in destinations:
                self._memory_edus.setdefault(d, []).append(edu)
                self.kick(d)
            return
        rows = [(d, None, json.dumps(edu)) for d in destinations]

        async def write() -> None:
            await self.hs.db.run(store.queue_outbound, rows, _now(), None)
            for d in destinations:
                self.kick(d)
        self._chain(write)

    def _room_servers(self, room_id: str) -> set[str]:
        head = self.hs.room_heads.peek(room_id)
        return servers_in_room(head) if head is not None else set()

    def sharing_servers(self, user_id: str) -> set[str]:
        servers: set[str] = set()
        for head in self.hs.room_heads.all():
            if head.membership_of(user_id) == "join":
                servers |= servers_in_room(head)
        return servers

    def on_ephemeral(self, event: dict) -> None:
        """The sync engine's ephemeral updates: the local users' typing, receipts and
        presence go to the servers that share the room (or a room, for presence)."""
        kind = event.get("type")
        if kind == "m.typing":
            room_id = event["room_id"]
            now = {u for u in event["content"]["user_ids"] if self.hs.accounts.is_mine(u)}
            before = self._typing_sent.get(room_id, set())
            self._typing_sent[room_id] = now
            servers = self._room_servers(room_id)
            for user_id in now ^ before:
                self.queue_edu(servers, "m.typing", {"room_id": room_id, "user_id": user_id,
                                                     "typing": user_id in now}, persist=False)
        elif kind == "m.receipt":
            room_id = event["room_id"]
            content: dict = {}
            for event_id, by_type in event["content"].items():
                for receipt_type, by_user in by_type.items():
                    if receipt_type != "m.read":
                        continue  # private receipts stay here
                    for user_id, receipt in by_user.items():
                        if self.hs.accounts.is_mine(user_id):
                            data = {k: v for k, v in receipt.items() if k in ("ts", "thread_id")}
                            content.setdefault(receipt_type, {})[user_id] = {"event_ids": [event_id], "data": data}
            if content:
                self.queue_edu(self._room_servers(room_id), "m.receipt", {room_id: content})
        elif kind == "m.presence":
            user_id = event.get("sender")
            if isinstance(user_id, str) and self.hs.accounts.is_mine(user_id):
                c = event["content"]
                update = {"user_id": user_id, "presence": c.get("presence"),
                          "last_active_ago": c.get("last_active_ago", 0),
                          "currently_active": bool(c.get("currently_active"))}
                if c.get("status_msg"):
                    update["status_msg"] = c["status_msg"]
                self.queue_edu(self.sharing_servers(user_id), "m.presence", {"push": [update]}, persist=False)

    def on_device_list_change(self, user_id: str) -> None:
        if not self.hs.accounts.is_mine(user_id):
            return
        sync = self.hs.sync
        stream_id = sync.device_lists.stream.current if sync is not None else _now()
        self.queue_edu(self.sharing_servers(user_id), "m.device_list_update", {
            "user_id": user_id, "device_id": "", "stream_id": stream_id, "prev_id": []})

    def send_to_device(self, sender: str, event_type: str, message_id: str, messages: dict[str, dict]) -> None:
        by_server: dict[str, dict] = {}
        for user_id, devices in messages.items():
            by_server.setdefault(server_of(user_id), {})[user_id] = devices
        for server, msgs in by_server.items():
            self.queue_edu({server}, "m.direct_to_device", {"sender": sender, "type": event_type,
                                                             "message_id": message_id, "messages": msgs})

    # ---- sending ---------------------------------------------------------------------

    def peer_alive(self, destination: str) -> None:
        """The destination talked to us: stop waiting for its retry time."""
        if destination in self._retry:
            self._retry.pop(destination, None)
            timer = self._timers.pop(destination, None)
            if timer is not None and timer.active():
                timer.cancel()
            self.kick(destination)

    def kick(self, destination: str) -> None:
        if self._stopped:
            return
        if destination in self._running:
            self._again.add(destination)
            return
        retry = self._retry.get(destination)
        if retry is not None and retry[1] > _now():
            if destination not in self._timers or not self._timers[destination].active():
                self._timers[destination] = reactor.callLater(
                    (retry[1] - _now()) / 1000.0, self.kick, destination)
            return
        self._running.add(destination)
        defer.ensureDeferred(self._run(destination))

    async def _run(self, destination: str) -> None:
        try:
            while not self._stopped:
                self._again.discard(destination)
                items = await self.hs.db.run(store.next_outbound, destination, MAX_PDUS, MAX_EDUS)
                memory = self._memory_edus.pop(destination, [])[-MAX_EDUS:]
                if not items and not memory:
                    break
                if not await self._send(destination, items, memory):
                    break
        except Exception:
            logger.exception("sending to %s failed", destination)
        finally:
            self._running.discard(destination)
        if destination in self._again and destination not in self._retry:
            self.kick(destination)

    async def _send(self, destination: str, items: list[tuple], memory: list[dict]) -> bool:
        event_ids = [eid for _, eid, _ in items if eid is not None]
        events = await self.hs.event_cache.get_many(event_ids)
        pdus = [self.federation.serving.pdu(events[eid]) for eid in event_ids if eid in events]
        edus = [json.loads(j) for _, _, j in items if j is not None] + memory
        if items:
            txn_id = f"{items[0][0]}-{items[-1][0]}"
        else:
            self._memory_txn += 1
            txn_id = f"m{_now()}-{self._memory_txn}"
        body = {"origin": self.hs.server_name, "origin_server_ts": _now(), "pdus": pdus, "edus": edus}
        try:
            answer = await self.federation.client.put(destination, path("/_matrix/federation/v1/send/%s", txn_id),
                                                      body, timeout=60)
        except FederationError as e:
            if e.status in (400, 404, 413):
                logger.warning("%s refused a transaction (%s); dropping it", destination, e)
            else:
                await self._failed(destination, e)
                return False
        else:
            for event_id, result in ((answer or {}).get("pdus") or {}).items():
                if isinstance(result, dict) and result.get("error"):
                    logger.info("%s did not accept %s: %s", destination, event_id, result["error"])
        if items:
            await self.hs.db.run(store.delete_outbound, [i for i, _, _ in items])
        self.sent_transactions += 1
        if destination in self._retry:
            self._retry.pop(destination, None)
            await self.hs.db.run(store.clear_retry, destination)
        return True

    async def _failed(self, destination: str, error: FederationError) -> None:
        interval, _ = self._retry.get(destination, (0, 0))
        interval = min(max(interval * 2, self.min_retry_ms), self.max_retry_ms)
        retry_at = _now() + interval
        self._retry[destination] = (interval, retry_at)
        logger.info("%s unreachable (%s); retrying in %.1f s", destination, error, interval / 1000)
        await self.hs.db.run(store.set_retry, destination, interval, retry_at, _now())
        self._timers[destination] = reactor.callLater(interval / 1000.0, self.kick, destination)
