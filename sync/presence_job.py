"""Several processes: presence kept by one process (`worker.jobs.presence`, by default the
stream owner) and mirrored by every other process serving /sync.

- The keeping process holds presence authoritatively (sync/presence.py): `PUT /presence`
  is forwarded to it, the events it sees mark their senders active, and its sweep turns the
  idle unavailable and the gone offline. It writes each change to `presence_stream` and
  announces the stream `presence` in the same transaction, one transaction at a time, so
  ids commit in order (`PresenceWriter`). It may be a client or sync process, not a writer
  (a writer replays no other writer's events).
- Every other sync process keeps a mirror: it reads the rows after its position when it
  hears the announcement, and after a reconnect, and wakes the long-polls of those sharing
  a room with the user (`PresenceReader`). The ids are the presence positions of sync
  tokens, good on every sync process and across restarts.
- Each mirror tells the keeper who syncs there (`SyncReporter`): a /sync after a pause or
  with a new `set_presence` at once, and everyone syncing every few seconds (a user left out
  has stopped there), over `POST /_homeserver/internal/v1/presence_syncing`.

A keeper that restarts keeps those its stream last showed present for 15 s, until the
mirrors have reported who syncs. Reports that cannot be delivered are dropped: the next
full list repairs them."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import orjson
from twisted.internet import reactor, task

from homeserver.async_utils import Rerun
from storage import presence as presence_store
from sync.presence import REPORT_GAP_MS
from sync.stream_followers import FollowedStream

if TYPE_CHECKING:
    from homeserver.server import HomeServer
    from sync.presence import Presence

logger = logging.getLogger(__name__)
SYNCING_PATH = "/_homeserver/internal/v1/presence_syncing"
KEEP_MS = 3_600_000     # replaced rows are kept this long (a mirror catching up reads them)
PRUNE_EVERY_S = 60.0
READ_PAGE = 1000
MAX_BATCH = 1000
RETRY_S = 1.0


class PresenceWriter:
    """On the keeping process: each change of presence, written in order and announced.
    The ids are the keeper's own presence positions (its stream goes on from the table's
    at start), so its sync tokens and the mirrors' agree."""

    def __init__(self, hs: "HomeServer", presence: "Presence") -> None:
        self.hs = hs
        self.presence = presence
        self._queue: list[tuple[str, int, bool]] = []   # (user, stream id, activity only) in id order
        self._writer = Rerun(self._write)
        self._pruned_at = 0.0

    def changed(self, user_id: str) -> None:
        self._add(user_id, self.presence.get(user_id).stream, False)

    def activity(self, user_id: str) -> None:
        """Fresher activity, no change of state: an id of its own, in no change log."""
        self._add(user_id, self.presence.stream.advance(), True)

    def _add(self, user_id: str, stream_id: int, activity_only: bool) -> None:
        p = self.presence.get(user_id)
        p.written_active_ts = p.last_active_ts
        self._queue.append((user_id, stream_id, activity_only))
        self._writer.request()

    async def _write(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            newest: dict[str, tuple[int, bool]] = {}  # a user's latest id (the older ones are gaps);
            for user_id, stream_id, activity_only in batch:  # activity only if nothing else changed
                quiet = activity_only and newest.get(user_id, (0, True))[1]
                newest[user_id] = (stream_id, quiet)
            rows = sorted((stream_id, user_id, *self._state(user_id), quiet)
                          for user_id, (stream_id, quiet) in newest.items())
            now = time.time()
            prune = now - self._pruned_at >= PRUNE_EVERY_S
            try:
                await self.hs.db.run(presence_store.append_changes, rows, int(now * 1000),
                                     self.hs.config.worker.instance_name,
                                     int(now * 1000) - KEEP_MS if prune else None)
            except Exception as e:  # tried again shortly; the state is kept here
                logger.warning("writing %d presence change(s) failed: %s", len(rows), e)
                self._queue[:0] = batch
                reactor.callLater(RETRY_S, self._writer.request)
                return
            if prune:
                self._pruned_at = now

    def _state(self, user_id: str) -> tuple[str, str | None, int]:
        p = self.presence.get(user_id)
        return p.state, p.status_msg, p.last_active_ts


class PresenceReader(FollowedStream):
    """On a sync process not keeping presence: the keeper's changes into the mirror."""

    def __init__(self, hs: "HomeServer", presence: "Presence") -> None:
        super().__init__(presence_store.STREAM)
        self.hs = hs
        self.presence = presence

    async def start(self) -> None:
        self.presence.load_mirror(await self.hs.db.run(presence_store.latest_changes))
        self._target = self.presence.stream.current

    def position(self) -> int:
        return self.presence.stream.current

    async def read_page(self, after: int, upto: int) -> None:
        rows = await self.hs.db.run(presence_store.changes_between, after, upto, READ_PAGE)
        for row in rows:
            try:
                self.presence.apply_change(*row)
            except Exception:  # one bad row must not stop the mirror
                logger.exception("applying a presence change failed")
        if len(rows) < READ_PAGE:
            self.presence.stream.current = max(self.presence.stream.current, upto)


class SyncReporter:
    """On the stream owner: who syncs, told to the job's process."""

    def __init__(self, hs: "HomeServer", presence: "Presence", job: str) -> None:
        self.hs = hs
        self.presence = presence
        self.job = job
        self._started: list[tuple[str, str | None]] = []
        self._full_list_due = True
        self._sender = Rerun(self._send)
        self._loop = task.LoopingCall(self._full_list)

    def start(self) -> None:
        self._loop.start(REPORT_GAP_MS / 1000, now=True)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def started(self, user_id: str, set_presence: str | None) -> None:
        self._started.append((user_id, set_presence))
        self._sender.request()

    def _full_list(self) -> None:
        self._full_list_due = True
        self._sender.request()

    async def _send(self) -> None:
        while self._started or self._full_list_due:
            body: dict[str, Any] = {"from": self.hs.config.worker.instance_name, "started": self._started}
            self._started = []
            if self._full_list_due:
                self._full_list_due = False
                body["syncing"] = self.presence.syncing_users()
            try:
                status, _ = await self.hs.internal.post(self.job, SYNCING_PATH, body, timeout_s=10.0)
                if status != 200:
                    logger.warning("the presence job (%s) answered %d to a syncing report", self.job, status)
            except Exception as e:  # the next full list repairs what is lost
                logger.warning("reporting who syncs to the presence job (%s) failed: %s", self.job, e)


async def serve_syncing(hs: "HomeServer", body: bytes) -> tuple[int, dict]:
    """The job's side of `SyncReporter` (on an internal listener only)."""
    if not (hs.config.presence.enabled and hs.config.worker.runs_job("presence")):
        return 404, {"errcode": "M_NOT_FOUND", "error": "presence is not kept here"}
    try:
        req = orjson.loads(body)
        reporter = str(req["from"])
        started = [(str(u), s if isinstance(s, str) else None) for u, s in req.get("started", [])]
        syncing = req.get("syncing")
        syncing = [(str(u), s if isinstance(s, str) else None) for u, s in syncing] \
            if isinstance(syncing, list) else None
    except (ValueError, TypeError, AttributeError, KeyError) as e:
        return 400, {"errcode": "M_BAD_JSON", "error": str(e)}
    hs.sync.presence.remote_syncing(reporter, started, syncing)
    return 200, {}


async def attach(hs: "HomeServer") -> None:
    """Wire this process's part of presence with several processes: the process keeping
    it (the `presence` job) announces its changes; every other sync process mirrors them
    and reports who syncs there. Called before replication listens."""
    worker = hs.config.worker
    if not hs.config.presence.enabled or not worker.multi_process:
        return
    presence = hs.sync.presence
    keeper = worker.jobs.presence or worker.streams
    if worker.runs_job("presence"):
        writer = PresenceWriter(hs, presence)
        presence.take_over(await hs.db.run(presence_store.latest_changes))
        presence.on_activity = writer.activity
        if worker.role == "sync":  # it serves /sync too: its own long-polls are woken as before
            wake = presence.on_change
            presence.on_change = lambda user_id: (wake(user_id), writer.changed(user_id))
        else:  # long-polls are woken by the mirrors
            presence.on_change = writer.changed
    elif worker.role == "sync":
        reader = PresenceReader(hs, presence)
        await reader.start()
        hs.replication.on_position(presence_store.STREAM, reader.heard)
        hs.sync.presence_reader = reader
        reporter = SyncReporter(hs, presence, keeper)
        presence.report_sync = reporter.started
        reporter.start()
