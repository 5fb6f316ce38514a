"""One pusher's delivery loop: the user's notifications after the pusher's stored
position, one request each, in stream order.

A notification is skipped (not pushed) while the user is reading along (see
homeserver/push/activity.py and `push.quiet_while_syncing`). A failing gateway (no
connection, timeout, 5xx, 429) is retried with the same notification after
`push.retry_initial_ms`, doubling up to `push.retry_max_ms`; after
`push.give_up_after_ms` that notification is dropped and the next one tried. A 4xx
answer drops the notification at once. A pushkey the gateway lists in `rejected`
removes the pusher. The position is stored after each notification, so a restart
resumes where delivery stopped."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import treq
from twisted.internet import defer, reactor, task
from twisted.web.client import Agent

from homeserver.media.url_preview import FilteredReactor
from homeserver.push.activity import is_syncing
from pushers import notification as bodies
from storage import push as push_store

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)
BATCH = 50


@dataclass
class PusherRow:
    id: int
    user_id: str
    access_token_hash: bytes | None
    kind: str
    app_id: str
    pushkey: str
    app_display_name: str
    device_display_name: str
    profile_tag: str | None
    lang: str
    data: dict
    pushkey_ts: int
    last_stream: int

    @classmethod
    def from_db(cls, row: tuple) -> "PusherRow":
        (pid, user_id, token_hash, kind, app_id, pushkey, app_name, device_name, profile_tag, lang,
         data_json, pushkey_ts, last_stream) = row
        return cls(pid, user_id, bytes(token_hash) if token_hash is not None else None, kind, app_id,
                   pushkey, app_name, device_name, profile_tag, lang, json.loads(data_json), pushkey_ts,
                   last_stream)

    def client_json(self) -> dict:
        out: dict[str, Any] = {"pushkey": self.pushkey, "kind": self.kind, "app_id": self.app_id,
                               "app_display_name": self.app_display_name,
                               "device_display_name": self.device_display_name, "lang": self.lang,
                               "data": self.data}
        if self.profile_tag is not None:
            out["profile_tag"] = self.profile_tag
        return out


@dataclass
class _Outcome:
    ok: bool
    retry: bool = False
    rejected: bool = False


class HttpPusher:
    def __init__(self, hs: "HomeServer", row: PusherRow, ip_filter: Any,
                 on_rejected: Callable[["HttpPusher"], None]) -> None:
        self.hs = hs
        self.row = row
        self._ip_filter = ip_filter
        self._on_rejected = on_rejected
        self._running = False
        self._nudged = False
        self.stopped = False
        self.delivered = 0
        self.failing_since: float | None = None
        self._waiting: defer.Deferred | None = None

    @property
    def url(self) -> str:
        return self.row.data["url"]

    def nudge(self) -> None:
        if self.stopped or not self.hs.config.push.enabled:
            return
        if self._running:
            self._nudged = True
            return
        self._running = True
        defer.ensureDeferred(self._run()).addErrback(self._crashed)

    def stop(self) -> None:
        self.stopped = True
        if self._waiting is not None and not self._waiting.called:
            self._waiting.cancel()

    def _crashed(self, failure) -> None:
        if not failure.check(defer.CancelledError):
            logger.error("pusher %s of %s stopped: %s", self.row.id, self.row.user_id, failure.getTraceback())
        self._running = False

    async def _run(self) -> None:
        try:
            while not self.stopped:
                self._nudged = False
                found = await self.hs.db.run(push_store.notifications_after, self.row.user_id,
                                             self.row.last_stream, BATCH)
                if not found:
                    if self._nudged:
                        continue
                    return
                for note in found:
                    if self.stopped:
                        return
                    await self._handle(note)
                    if self.stopped:
                        return
                    self.row.last_stream = note.stream_ordering
                    await self.hs.db.run(push_store.pusher_delivered, self.row.id, note.stream_ordering)
        finally:
            self._running = False

    async def _handle(self, note: push_store.Notification) -> None:
        cfg = self.hs.config.push
        user_id = self.row.user_id
        if cfg.quiet_while_syncing and await is_syncing(self.hs, user_id, cfg.synced_within_ms / 1000):
            return  # the user is looking: no phone needs to ring
        event = await self.hs.event_cache.get(note.event_id)
        if event is None:
            return
        await self.hs.push.counts.ensure_loaded(user_id)
        head = await self.hs.room_heads.get(note.room_id)
        devices = [bodies.device(self.row.app_id, self.row.pushkey, self.row.pushkey_ts, self.row.data,
                                 bodies.tweaks_of(note.actions))]
        body = bodies.event_notification(
            event, user_id, note.actions, self.unread(), head, devices,
            self.row.data.get("format") == "event_id_only", cfg.include_content)
        delay = cfg.retry_initial_ms / 1000
        first_try = time.monotonic()
        while not self.stopped:
            outcome = await self._post(body)
            if outcome.rejected:
                self._reject()
                return
            if outcome.ok or not outcome.retry:
                self.failing_since = None
                self.delivered += outcome.ok
                return
            if self.failing_since is None:
                self.failing_since = first_try
            if (time.monotonic() - first_try) * 1000 >= cfg.give_up_after_ms:
                logger.warning("pusher %s: giving up on %s after %.0f s of failures", self.row.id,
                               note.event_id, time.monotonic() - first_try)
                return
            await self._sleep(delay)
            delay = min(delay * 2, cfg.retry_max_ms / 1000)

    def unread(self) -> int:
        counts = self.hs.push.counts
        if self.hs.config.push.group_unread_count_by_room:
            return counts.badge(self.row.user_id)
        return counts.total(self.row.user_id)

    async def send_badge(self) -> None:
        """A counts-only push after a read receipt lowered the counts (one attempt: the
        next push carries the counts again anyway)."""
        if self.stopped or self.failing_since is not None or not self.hs.config.push.enabled:
            return
        devices = [bodies.device(self.row.app_id, self.row.pushkey, self.row.pushkey_ts, self.row.data, None)]
        outcome = await self._post(bodies.badge_notification(self.unread(), devices))
        if outcome.rejected:
            self._reject()

    def _reject(self) -> None:
        logger.info("push gateway rejected pushkey of pusher %s (%s): removing it", self.row.id, self.row.app_id)
        self.stop()
        self._on_rejected(self)

    async def _sleep(self, seconds: float) -> None:
        self._waiting = task.deferLater(reactor, seconds, lambda: None)
        try:
            await self._waiting
        except defer.CancelledError:
            pass
        finally:
            self._waiting = None

    async def _post(self, body: dict) -> _Outcome:
        timeout = self.hs.config.push.request_timeout_ms / 1000
        client = treq.client.HTTPClient(Agent(FilteredReactor(reactor, self._ip_filter),
                                              connectTimeout=timeout))
        try:
            d = defer.ensureDeferred(self._request(client, body))
            d.addTimeout(timeout, reactor)
            code, content = await d
        except Exception as e:
            logger.info("pusher %s: gateway %s unreachable: %r", self.row.id, self.url, e)
            return _Outcome(False, retry=True)
        if code == 200:
            try:
                rejected = json.loads(content or b"{}").get("rejected") or []
            except (ValueError, AttributeError):
                rejected = []
            return _Outcome(True, rejected=isinstance(rejected, list) and self.row.pushkey in rejected)
        logger.info("pusher %s: gateway %s answered %d", self.row.id, self.url, code)
        return _Outcome(False, retry=code >= 500 or code == 429)

    async def _request(self, client: Any, body: dict) -> tuple[int, bytes]:
        resp = await client.post(self.url, data=json.dumps(body).encode(),
                                 headers={b"Content-Type": [b"application/json"]})
        return resp.code, await resp.content()
