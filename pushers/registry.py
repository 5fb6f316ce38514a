"""Every pusher of every user, in memory, with the client API's changes
(GET /pushers, POST /pushers/set) written through. Attached as `hs.pushers`.

With several processes only the one running the pushers job (`worker.jobs.pushers`)
holds them; the others read and write the table, and each change they make tells it
(invalidation `pushers`, keyed by the user, with the ids of other users' pushers a change
removed), so it reads that user's pushers again."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from twisted.internet import defer

from homeserver.async_utils import KeyedLock
from homeserver.errors import MatrixError, invalid_param, missing_param
from homeserver.media.ip_filter import IpFilter
from pushers.http_pusher import HttpPusher, PusherRow
from storage import push as push_store

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)
NOTIFY_PATH = "/_matrix/push/v1/notify"
INVALIDATION = "pushers"


def _checked_str(body: dict, key: str, required: bool, max_len: int | None = None,
                 max_bytes: int | None = None) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise missing_param(f"{key} is required")
        return None
    if not isinstance(value, str) or "\x00" in value:
        raise MatrixError(400, "M_BAD_JSON", f"{key} must be a string")
    if max_len is not None and len(value) > max_len:
        raise invalid_param(f"{key} is longer than {max_len} characters")
    if max_bytes is not None and len(value.encode("utf-8")) > max_bytes:
        raise invalid_param(f"{key} is longer than {max_bytes} bytes")
    return value


class Pushers:
    def __init__(self, hs: "HomeServer") -> None:
        self.hs = hs
        self._by_user: dict[str, dict[int, HttpPusher]] = {}
        self.ip_filter = IpFilter(hs.config.push.gateway_ip_range_whitelist)
        self.running = False  # holding (and delivering) every pusher: the pushers job
        self._reloads = KeyedLock()  # one after another: the last read follows the last change

    async def start(self) -> None:
        self.running = True
        if self.hs.replication is not None:
            self.hs.replication.on_invalidate(INVALIDATION, self._changed_elsewhere)
        for row in await self.hs.db.run(push_store.all_pushers):
            self._add(PusherRow.from_db(row))
        self.hs.push.on_notified.append(self.on_notified)
        self.hs.push.counts.on_counts_lowered.append(self.on_counts_lowered)
        for pusher in self._all():
            pusher.nudge()  # whatever was left undelivered at the last stop

    def stop(self) -> None:
        for pusher in self._all():
            pusher.stop()

    def _all(self) -> list[HttpPusher]:
        return [p for ps in self._by_user.values() for p in ps.values()]

    def _add(self, row: PusherRow) -> HttpPusher:
        pusher = HttpPusher(self.hs, row, self.ip_filter, self._rejected)
        self._by_user.setdefault(row.user_id, {})[row.id] = pusher
        return pusher

    def _forget(self, user_id: str, pusher_ids: list[int]) -> None:
        mine = self._by_user.get(user_id, {})
        for pid in pusher_ids:
            pusher = mine.pop(pid, None)
            if pusher is not None:
                pusher.stop()
        if not mine:
            self._by_user.pop(user_id, None)

    def _forget_anywhere(self, pusher_ids: list[int]) -> None:
        ids = set(pusher_ids)
        for user_id, mine in list(self._by_user.items()):
            found = [pid for pid in mine if pid in ids]
            if found:
                self._forget(user_id, found)

    # ---- the client API ------------------------------------------------------------

    async def pushers_of(self, user_id: str) -> list[dict]:
        if not self.running:  # another process holds them
            return [PusherRow.from_db(r).client_json() for r in await self.hs.db.run(push_store.pushers_of, user_id)]
        return [p.row.client_json() for p in sorted(self._by_user.get(user_id, {}).values(),
                                                    key=lambda p: p.row.id)]

    async def set(self, user_id: str, token_hash: bytes | None, body: dict) -> None:
        """POST /pushers/set: create, update (same user, app_id and pushkey) or, with
        `kind: null`, delete."""
        if "kind" not in body:
            raise missing_param("kind is required")
        app_id = _checked_str(body, "app_id", True, max_len=64)
        pushkey = _checked_str(body, "pushkey", True, max_bytes=512)
        kind = body["kind"]
        if kind is None:
            removed = await self.hs.db.run(push_store.delete_pusher, user_id, app_id, pushkey)
            self._forget(user_id, removed)
            await self._tell_others(user_id)
            return
        if kind == "email":
            raise invalid_param("email pushers are not supported by this server; use kind http")
        if kind != "http":
            raise invalid_param("kind must be http (or null to delete a pusher)")
        app_display_name = _checked_str(body, "app_display_name", True)
        device_display_name = _checked_str(body, "device_display_name", True)
        lang = _checked_str(body, "lang", True)
        profile_tag = _checked_str(body, "profile_tag", False)
        data = body.get("data")
        if data is None:
            raise missing_param("data is required")
        if not isinstance(data, dict):
            raise MatrixError(400, "M_BAD_JSON", "data must be an object")
        self._check_url(data.get("url"))
        if "format" in data and data["format"] != "event_id_only":
            raise invalid_param("data.format must be event_id_only (or absent)")
        append = body.get("append", False)
        if not isinstance(append, bool):
            raise MatrixError(400, "M_BAD_JSON", "append must be a boolean")
        row, removed = await self.hs.db.run(
            push_store.set_pusher, user_id, token_hash, kind, app_id, pushkey, app_display_name,
            device_display_name, profile_tag, lang, data, int(time.time() * 1000),
            self.hs.persister.max_stream_ordering, append)
        self._forget_anywhere(removed)
        if self.running:
            self._put(PusherRow.from_db(row))
        await self._tell_others(user_id, removed)

    def _put(self, new: PusherRow) -> None:
        existing = self._by_user.get(new.user_id, {}).get(new.id)
        if existing is not None:
            new.last_stream = max(new.last_stream, existing.row.last_stream)  # an update keeps its place
            existing.row = new
        else:
            self._add(new)

    async def _tell_others(self, user_id: str, removed: tuple[int, ...] | list[int] = ()) -> None:
        await self.hs.invalidate_elsewhere(INVALIDATION, " ".join([user_id, *map(str, removed)]))

    def _changed_elsewhere(self, key: str) -> None:
        """Another process changed the user's pushers (and removed those ids of others)."""
        user_id, *removed = key.split(" ")
        self._forget_anywhere([int(i) for i in removed])
        defer.ensureDeferred(self._reload(user_id))

    async def _reload(self, user_id: str) -> None:
        try:
            async with self._reloads.hold(user_id):
                rows = [PusherRow.from_db(r) for r in await self.hs.db.run(push_store.pushers_of, user_id)]
                present = {row.id for row in rows}
                self._forget(user_id, [pid for pid in self._by_user.get(user_id, {}) if pid not in present])
                for row in rows:
                    self._put(row)
        except Exception:
            logger.exception("reading the pushers of %s again failed", user_id)

    @staticmethod
    def _check_url(url: Any) -> None:
        if not isinstance(url, str):
            raise invalid_param("data.url is required for http pushers")
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise invalid_param("data.url must be an http(s) URL")
        if parts.path != NOTIFY_PATH:
            raise invalid_param(f"data.url must have the path {NOTIFY_PATH}")

    # ---- events --------------------------------------------------------------------

    def on_notified(self, user_ids: set[str]) -> None:
        by_user = self._by_user
        for user_id in user_ids:
            mine = by_user.get(user_id)
            if mine:
                for pusher in mine.values():
                    pusher.nudge()

    def on_counts_lowered(self, user_id: str) -> None:
        for pusher in list(self._by_user.get(user_id, {}).values()):
            defer.ensureDeferred(pusher.send_badge())

    def _rejected(self, pusher: HttpPusher) -> None:
        self._forget(pusher.row.user_id, [pusher.row.id])
        defer.ensureDeferred(self.hs.db.run(push_store.delete_pusher_by_id, pusher.row.id))

    async def tokens_gone(self, user_id: str, token_hashes: list[bytes]) -> None:
        """Devices logged out (or the account deactivated): their pushers go too."""
        if token_hashes and (user_id in self._by_user or not self.running):
            removed = await self.hs.db.run(push_store.delete_pushers_of_tokens, user_id, token_hashes)
            self._forget(user_id, removed)
            if removed:
                await self._tell_others(user_id)
