"""To-device messages: stored per target device, delivered by /sync exactly once, and
deleted when the device syncs with a token past them (its acknowledgement)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from homeserver.errors import MatrixError
from storage import to_device as store
from sync.stream_ids import StreamIdGen

if TYPE_CHECKING:
    from homeserver.server import HomeServer

MAX_PER_SYNC = 100


class ToDevice:
    def __init__(self, hs: "HomeServer", on_change: Callable[[str], None]) -> None:
        self.hs = hs
        self._on_change = on_change
        self.stream: StreamIdGen = None  # type: ignore[assignment]
        # Highest stream id queued for each device, known once looked up or written.
        self._pending: dict[tuple[str, str], int] = {}
        self._acked: dict[tuple[str, str], int] = {}  # deleted up to here

    async def start(self) -> None:
        self.stream = StreamIdGen(await self.hs.db.run(store.max_stream))

    async def send(self, sender: str, sender_device: str, event_type: str, txn_id: str,
                   messages: dict) -> None:
        if not isinstance(messages, dict):
            raise MatrixError(400, "M_BAD_JSON", "messages must be an object")
        targets: list[tuple[str, str, dict]] = []
        remote: dict[str, dict] = {}  # other servers' users: federation carries these
        for user_id, by_device in messages.items():
            if not isinstance(by_device, dict):
                raise MatrixError(400, "M_BAD_JSON", "messages.<user> must be an object")
            if not self.hs.accounts.is_mine(user_id):
                remote[user_id] = by_device
                continue
            for device_id, content in by_device.items():
                if not isinstance(content, dict):
                    raise MatrixError(400, "M_BAD_JSON", "message content must be an object")
                targets.append((user_id, device_id, content))
        # Messages to another organization's users are dropped, as for unknown devices.
        sender_tenant = await self.hs.tenancy.tenant_of(sender)
        targets = [t for t in targets if await self.hs.tenancy.tenant_of(t[0]) == sender_tenant]
        recipients = {u for u, _, _ in targets}

        # Expand "*" first, then take stream ids on the reactor thread (the generator is
        # not thread-safe), then write everything in one transaction.
        wildcard_users = sorted({u for u, d, _ in targets if d == "*"})
        devices_of = {}
        if wildcard_users:
            devices_of = await self.hs.db.run(
                lambda cur: {u: store.devices_of(cur, u) for u in wildcard_users})
        rows = []
        for user_id, device_id, content in targets:
            for dev in (devices_of.get(user_id, []) if device_id == "*" else [device_id]):
                rows.append((self.stream.allocate(), user_id, dev,
                             {"type": event_type, "sender": sender, "content": content}))

        def txn(cur) -> bool:
            if not store.claim_txn(cur, sender, sender_device, txn_id):
                return False  # a retry of a delivered transaction: send nothing again
            store.enqueue(cur, rows)
            return True

        try:
            sent = await self.hs.db.run(txn)
        finally:
            for row in rows:
                self.stream.finish(row[0])
        federation = getattr(self.hs, "federation", None)
        if sent and remote and federation is not None and self.hs.accounts.is_mine(sender):
            await federation.send_to_device(sender, sender_device, event_type, txn_id, remote)
        if sent:
            for stream_id, user_id, dev, _msg in rows:
                # Only the highest pending id matters, so this is right even before the
                # device's older messages were looked up.
                key = (user_id, dev)
                self._pending[key] = max(self._pending.get(key, 0), stream_id)
            for user_id in recipients:
                self._on_change(user_id)

    def restart_at(self, position: int) -> None:
        """A sync process following the stream owner starts at its announced position."""
        self.stream.restart_at(position)

    def follow(self, rows: list[tuple[int, str, str]]) -> None:
        """Several sync processes: messages the stream owner queued."""
        for stream_id, user_id, device_id in rows:
            key = (user_id, device_id)
            self._pending[key] = max(self._pending.get(key, 0), stream_id)
        for user_id in dict.fromkeys(u for _, u, _ in rows):
            self._on_change(user_id)

    async def pending_stream(self, user_id: str, device_id: str) -> int:
        key = (user_id, device_id)
        if key not in self._pending:
            loaded = await self.hs.db.run(store.pending_max, user_id, device_id)
            self._pending[key] = max(self._pending.get(key, 0), loaded)
        return self._pending[key]

    async def fetch(self, user_id: str, device_id: str, since: int) -> tuple[list[dict], int]:
        """Messages after `since` (deleting those up to it); returns them and the position
        the next token should carry."""
        upto = self.stream.current
        key = (user_id, device_id)
        pending = await self.pending_stream(user_id, device_id)
        acked = self._acked.get(key, 0)
        if pending <= since and pending <= acked:
            return [], upto  # nothing to deliver and nothing left to delete: no query
        rows = await self.hs.db.run(store.fetch_and_ack, user_id, device_id, since, upto, MAX_PER_SYNC)
        self._acked[key] = max(acked, since)
        if len(rows) == MAX_PER_SYNC:
            return [m for _, m in rows], rows[-1][0]
        return [m for _, m in rows], upto
