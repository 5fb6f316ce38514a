"""Several sync processes: /sync served by processes other than the stream owner.

The per-user streams (receipts, account data, to-device, device lists, typing) are written
by one process, the stream owner (`worker.streams`), with ids from its memory
(sync/stream_ids.py). Any other sync process *follows* them:

- the owner announces each stream's position as it advances (`StreamAnnouncer`): a
  position only moves past ids whose writes have finished, so every row up to it is in
  its table. Announcements of a burst are written together, one transaction at a time
  (NOTIFY, `stream_positions`). Typing, which lives in the owner's memory, is written to
  `typing_stream` in the same transaction as its position;
- a follower reads the rows after its position when it hears one, and after every
  reconnect, hands them to the stream's `follow` (its position maps and change logs, and
  the long-polls to wake), then moves its position (`StreamFollower`).

Positions are the owner's ids, so a sync token is good on every sync process. Presence
is mirrored the same way (sync/presence_job.py); events come by replication like
everywhere. Writes to the streams made on a follower are forwarded to the owner."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet import defer, reactor

from homeserver.async_utils import Rerun
from storage import account_data as account_data_store
from storage import device_lists as device_lists_store
from storage import receipts as receipts_store
from storage import replication as repl_store
from storage import to_device as to_device_store
from storage import typing as typing_store

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)
READ_PAGE = 1000
TYPING_KEEP_MS = 300_000
PRUNE_EVERY_S = 60.0
RETRY_S = 1.0
TOKEN_WAIT_S = 3.0          # a token another sync process handed out: it has read that far
UNANNOUNCED_WAIT_S = 0.25   # a position nobody announced yet
STREAMS_HEADER = b"X-Homeserver-Streams"
ROOM_STREAMS = ("receipts", "typing")  # rows keyed by room


def _typing_window_ms() -> int:
    from sync.typing import MAX_TIMEOUT_MS  # noqa: PLC0415
    return int(time.time() * 1000) - MAX_TIMEOUT_MS


def _streams(hs: "HomeServer") -> dict[str, tuple[Any, Callable]]:
    """Announced stream name -> (the engine's part, its storage's `changes_between`)."""
    engine = hs.sync
    return {
        "receipts": (engine.receipts, receipts_store.changes_between),
        "account_data": (engine.account_data, account_data_store.changes_between),
        "to_device": (engine.to_device, to_device_store.changes_between),
        "device_lists": (engine.device_lists, device_lists_store.changes_between),
        "typing": (engine.typing, typing_store.changes_between),
    }


class StreamAnnouncer:
    """On the stream owner: each stream's new position, and typing's rows."""

    def __init__(self, hs: "HomeServer") -> None:
        self.hs = hs
        self._positions: dict[str, int] = {}
        self._typing: list[tuple[int, str, list[str]]] = []
        self._writer = Rerun(self._write)
        self._pruned_at = 0.0

    async def start(self) -> None:
        engine = self.hs.sync
        engine.typing.restart_at(await self.hs.db.run(typing_store.max_stream))
        for name, (part, _) in _streams(self.hs).items():
            # Ids never go back below what was announced (a table whose newest rows were
            # deleted, delivered to-device messages say, would start lower): the
            # followers would take the new ids for old ones.
            # (Any instance's: an owner renamed or moved leaves its row, and followers hear it.)
            announced = max((await self.hs.db.run(repl_store.positions, name)).values(), default=0)
            if announced > part.stream.current:
                part.restart_at(announced)
            if name != "typing":
                part.stream.on_advance = lambda position, name=name: self.advanced(name, position)
        engine.typing.on_recorded = self._typing_changed
        # Typing is in memory: those shown typing before a restart have stopped.
        for _, room_id, _ in await self.hs.db.run(typing_store.typing_now, _typing_window_ms()):
            engine.typing.clear_followed(room_id)
        for name, (part, _) in _streams(self.hs).items():  # where the followers start
            self.advanced(name, part.stream.current)

    def advanced(self, stream: str, position: int) -> None:
        self._positions[stream] = max(self._positions.get(stream, 0), position)
        self._writer.request()

    def _typing_changed(self, room_id: str, stream_id: int) -> None:
        self._typing.append((stream_id, room_id, self.hs.sync.typing.typing_users(room_id)))
        self.advanced("typing", stream_id)

    async def _write(self) -> None:
        while self._positions:
            positions, self._positions = self._positions, {}
            rows, self._typing = self._typing, []
            now = time.time()
            prune = now - self._pruned_at >= PRUNE_EVERY_S
            instance = self.hs.config.worker.instance_name

            def txn(cur) -> None:
                if rows:
                    typing_store.append(cur, rows, int(now * 1000),
                                        int(now * 1000) - TYPING_KEEP_MS if prune else None)
                for stream, position in positions.items():
                    repl_store.announce(cur, stream, instance, position)
            try:
                await self.hs.db.run(txn)
                if prune:
                    self._pruned_at = now
            except Exception as e:  # tried again shortly
                logger.warning("announcing the per-user streams failed: %s", e)
                for stream, position in positions.items():
                    self._positions[stream] = max(self._positions.get(stream, 0), position)
                self._typing[:0] = rows
                reactor.callLater(RETRY_S, self._writer.request)
                return


class FollowedStream:
    """Reading a stream another process writes, up to the position it announced (only its
    announcements move the reading on: a position named elsewhere, in a token or an
    answer, may be ahead of its table), page by page, tried again after a failure; and
    waiting for a position (a write made through this process, a token from another)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._target = 0
        self._reader = Rerun(self._read)
        self._waiters: list[tuple[int, defer.Deferred]] = []

    def position(self) -> int:
        """How far this process has read."""
        raise NotImplementedError

    async def read_page(self, after: int, upto: int) -> None:
        """Read and apply rows in (after, upto], moving `position` past them."""
        raise NotImplementedError

    @property
    def announced(self) -> int:
        return self._target

    def heard(self, position: int) -> None:
        self._target = max(self._target, position)
        if self._target > self.position():
            self._reader.request()

    def wait_for(self, position: int) -> defer.Deferred:
        if self.position() >= position:
            return defer.succeed(None)
        self._waiters = [(p, d) for p, d in self._waiters if not d.called]  # (given up on: timed out)
        d: defer.Deferred = defer.Deferred()
        self._waiters.append((position, d))
        return d

    async def _read(self) -> None:
        while self._target > self.position():
            try:
                await self.read_page(self.position(), self._target)
            except Exception as e:  # tried again shortly
                logger.warning("reading the %s stream failed: %s", self.name, e)
                reactor.callLater(RETRY_S, self._reader.request)
                return
            current = self.position()
            ready = [d for p, d in self._waiters if p <= current]
            self._waiters = [(p, d) for p, d in self._waiters if p > current]
            for d in ready:
                if not d.called:
                    d.callback(None)


class StreamFollower(FollowedStream):
    """On a sync process that is not the owner: one stream's rows, after its position."""

    def __init__(self, hs: "HomeServer", name: str, part: Any, read: Callable) -> None:
        super().__init__(name)
        self.hs, self.part, self._read_rows = hs, part, read

    async def start(self) -> None:
        announced = (await self.hs.db.run(repl_store.positions, self.name)).get(self.hs.config.worker.streams)
        # The owner's position (rows above it may still be committing); before the owner
        # ever announced, what its table holds.
        self.part.restart_at(announced if announced is not None else self.part.stream.current)
        if self.name == "typing":  # who is typing now, as far as the owner wrote
            rows = [r for r in await self.hs.db.run(typing_store.typing_now, _typing_window_ms())
                    if r[0] <= self.part.stream.current]
            self.part.follow(rows)
        self._target = self.part.stream.current
        self.hs.replication.on_position(self.name, self.heard)

    def position(self) -> int:
        return self.part.stream.current

    async def read_page(self, after: int, upto: int) -> None:
        rows = await self.hs.db.run(self._read_rows, after, upto, READ_PAGE)
        if self.name in ROOM_STREAMS:  # who to wake: the members of rooms new to this process
            for room_id in {r[1] for r in rows}:
                if self.hs.room_heads.peek(room_id) is None:
                    await self.hs.room_heads.get(room_id)
        prepare = getattr(self.part, "prepare_follow", None)
        if rows and prepare is not None:  # (receipts: the unread counts they lower)
            await prepare(rows)
        # Then, with no pause: the position moves, and the long-polls are woken to answer
        # up to it.
        self.part.stream.advance_to(rows[-1][0] if len(rows) == READ_PAGE else upto)
        if rows:
            self.part.follow(rows)


def positions_header(hs: "HomeServer") -> bytes:
    """The stream owner's positions, on its answer to a request another sync process
    forwarded: that process waits until it has read up to them (`catch_up`)."""
    return ",".join(f"{name}:{part.stream.current}" for name, (part, _) in _streams(hs).items()).encode()


async def catch_up(hs: "HomeServer", header: bytes, timeout: float = 10.0) -> None:
    followers: dict[str, StreamFollower] = getattr(hs.sync, "followers", {})
    waits = []
    for item in header.decode("ascii", "replace").split(","):
        name, _, position = item.partition(":")
        if name in followers and position.isdigit():
            waits.append(followers[name].wait_for(int(position)))
    if waits:
        try:
            await defer.gatherResults(waits, consumeErrors=True).addTimeout(timeout, reactor)
        except Exception:  # (a timeout arrives as FirstError): answered all the same
            logger.warning("the per-user streams were not read up to the owner's within %.0f s", timeout)


async def attach(hs: "HomeServer") -> None:
    """Wire this process's part: the owner announces, other sync processes follow.
    Called before replication listens."""
    worker = hs.config.worker
    if not worker.multi_process:
        return
    if worker.owns_streams:
        await StreamAnnouncer(hs).start()
    elif worker.role == "sync":
        hs.sync.followers = {}
        for name, (part, read) in _streams(hs).items():
            follower = hs.sync.followers[name] = StreamFollower(hs, name, part, read)
            await follower.start()


async def reach_token(hs: "HomeServer", token: Any) -> None:
    """Before answering a /sync from `token`, which another sync process may have handed
    out: wait (a little) until this process has read every stream up to it, so the answer
    neither repeats what the token has seen nor hands out a lower position. A position
    beyond anything announced yet (a token of the stream owner, whose typing ids run ahead
    of its table by milliseconds, or one from before an upgrade that will never come) is
    waited for only briefly."""
    waits, implausible = [], False
    replication = hs.replication
    if replication.replayed < token.events:
        implausible |= token.events > max(replication.view.heard.values(), default=0)
        waits.append(replication.wait_for(token.events, TOKEN_WAIT_S))
    for name, follower in getattr(hs.sync, "followers", {}).items():
        position = getattr(token, name)
        if follower.part.stream.current < position:
            implausible |= position > follower.announced
            waits.append(follower.wait_for(position))
    mirror = getattr(hs.sync, "presence_reader", None)
    if mirror is not None and hs.sync.presence.stream.current < token.presence:
        implausible |= token.presence > mirror.announced
        waits.append(mirror.wait_for(token.presence))
    if not waits:
        return
    timeout = UNANNOUNCED_WAIT_S if implausible else TOKEN_WAIT_S
    try:
        await defer.gatherResults(waits, consumeErrors=True).addTimeout(timeout, reactor)
    except Exception:
        logger.info("a sync token ahead of this process by more than %.2f s; answering from here", timeout)
