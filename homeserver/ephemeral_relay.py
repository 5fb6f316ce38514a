"""Several processes: typing, read receipts and presence for application services.

The stream owner (`worker.streams`) keeps typing, receipts and presence and tells its
ephemeral listeners of each change; application services that receive ephemeral data get
them from the process running the `appservices` job. When that is another process, the
owner writes each such update to the `ephemeral_relay` table, announcing the stream
`ephemeral` in the same transaction; the job's process reads the rows after its position
when it hears the announcement (or catches up after a reconnect) and hands them to its
transaction pushers. Only positions travel by NOTIFY, as for events.

Writes are one transaction at a time, so ids commit in order and a reader that heard
position P has every row up to P. Rows are kept for `KEEP_MS`: ephemeral data may be
dropped (a job process that was down starts from the newest position), events never."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Callable

import orjson

from homeserver.async_utils import Rerun
from storage import ephemeral_relay as relay_store

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)
KEEP_MS = 300_000
PRUNE_EVERY_S = 60.0
MAX_BATCH = 500
READ_PAGE = 1000


class RelaySender:
    """On the stream owner: queues each ephemeral update and writes the queue in order."""

    def __init__(self, hs: "HomeServer") -> None:
        self.hs = hs
        self._queue: list[str] = []
        self._writer = Rerun(self._write)
        self._pruned_at = 0.0

    def add(self, event: dict) -> None:
        # Judged here, where typing, receipts and presence are made and the heads are
        # current; the job's process judges again before sending.
        if not any(p.wants_ephemeral(event) for p in self.hs.appservices.pushers.values()):
            return
        self._queue.append(orjson.dumps(event).decode())
        self._writer.request()

    async def _write(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            now = time.time()
            prune = now - self._pruned_at >= PRUNE_EVERY_S
            try:
                await self.hs.db.run(relay_store.append, batch, int(now * 1000),
                                     self.hs.config.worker.instance_name, KEEP_MS if prune else None)
                if prune:
                    self._pruned_at = now
            except Exception as e:  # dropped, as ephemeral data may be
                logger.warning("relaying %d ephemeral update(s) failed: %s", len(batch), e)


class RelayReader:
    """On the process running the application-service job: reads what the owner relayed
    and hands it to `deliver`."""

    def __init__(self, hs: "HomeServer", deliver: Callable[[dict], None]) -> None:
        self.hs = hs
        self._deliver = deliver
        self.position = 0
        self._target = 0
        self._reader = Rerun(self._read)

    async def start(self) -> None:
        self.position = self._target = await self.hs.db.run(relay_store.latest)

    def heard(self, position: int) -> None:
        """An announced position (or the stored one, after a reconnect: a read that failed
        before is tried again then)."""
        self._target = max(self._target, position)
        if self._target > self.position:
            self._reader.request()

    async def _read(self) -> None:
        while self._target > self.position:
            upto = self._target
            try:
                rows = await self.hs.db.run(relay_store.between, self.position, upto, READ_PAGE)
            except Exception as e:  # the next announcement or reconnect tries again
                logger.warning("reading relayed ephemeral updates failed: %s", e)
                return
            for _, text in rows:
                try:
                    event = orjson.loads(text)
                    room_id = event.get("room_id")
                    if room_id:  # who may see it is judged by the room's members
                        await self.hs.room_heads.get(room_id)
                    self._deliver(event)
                except Exception:
                    logger.exception("handing on a relayed ephemeral update failed")
            self.position = rows[-1][0] if len(rows) == READ_PAGE else upto


async def attach(hs: "HomeServer") -> None:
    """Wire the relay for this process's part, if any. Called before replication listens."""
    worker = hs.config.worker
    if not worker.multi_process or not any(r.receive_ephemeral for r in hs.appservices.registrations):
        return
    pushes_here = worker.runs_job("appservices")
    if worker.owns_streams and not pushes_here:
        hs.sync.ephemeral_listeners.append(RelaySender(hs).add)
    elif pushes_here and not worker.owns_streams:
        reader = RelayReader(hs, hs.appservices.on_ephemeral)
        await reader.start()
        hs.replication.on_position(relay_store.STREAM, reader.heard)
