"""Who is syncing: a user with a /sync in flight, or one that ended less than a grace
period ago, is reading along, so pushers leave their phones quiet.

Kept by each process serving /sync; a pushers job asks every sync process over their
internal listeners (`is_syncing`, `serve_syncing`)."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import orjson
from twisted.internet import defer

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)
SYNCING_PATH = "/_homeserver/internal/v1/syncing"
ASK_TIMEOUT_S = 2.0  # a stream owner that does not answer must not hold the pushers back


class SyncActivity:
    def __init__(self) -> None:
        self._in_flight: dict[str, int] = {}
        self._last_ended: dict[str, float] = {}

    def started(self, user_id: str) -> None:
        self._in_flight[user_id] = self._in_flight.get(user_id, 0) + 1

    def finished(self, user_id: str) -> None:
        left = self._in_flight.get(user_id, 1) - 1
        if left > 0:
            self._in_flight[user_id] = left
        else:
            self._in_flight.pop(user_id, None)
        self._last_ended[user_id] = time.monotonic()

    def is_active(self, user_id: str, grace_s: float) -> bool:
        if user_id in self._in_flight:
            return True
        ended = self._last_ended.get(user_id)
        if ended is None:
            return False
        if time.monotonic() - ended < grace_s:
            return True
        del self._last_ended[user_id]  # keep the map to recent syncers
        return False


async def is_syncing(hs: "HomeServer", user_id: str, grace_s: float) -> bool:
    """Whether the user is reading along, wherever /sync is served: here, or on any sync
    process (asked at once). Unknown (none can be asked) counts as not: a phone rings
    rather than stays silent."""
    worker = hs.config.worker
    if not worker.multi_process:
        return hs.push.activity.is_active(user_id, grace_s)
    if worker.role == "sync" and hs.push.activity.is_active(user_id, grace_s):
        return True
    try:
        others = [name for name in await hs.writer_layout.sync_instances() if name != worker.instance_name]
    except Exception as e:
        logger.warning("listing the sync processes failed: %s", e)
        return False
    if not others:
        return False
    body = {"user_id": user_id, "grace_ms": int(grace_s * 1000)}

    async def ask(instance: str) -> bool:
        try:
            status, answer = await hs.internal.post(instance, SYNCING_PATH, body, timeout_s=ASK_TIMEOUT_S)
        except Exception as e:
            logger.warning("asking %s whether %s is syncing failed: %s", instance, user_id, e)
            return False
        return status == 200 and isinstance(answer, dict) and answer.get("active") is True
    answers = await defer.gatherResults([defer.ensureDeferred(ask(i)) for i in others])
    return any(answers)


async def serve_syncing(hs: "HomeServer", body: bytes) -> tuple[int, dict[str, Any]]:
    """A sync process's side of `is_syncing` (an internal listener only)."""
    if hs.config.worker.role != "sync":  # only a process serving /sync knows
        return 404, {"errcode": "M_UNRECOGNIZED", "error": "not a sync process"}
    try:
        req = orjson.loads(body)
        user_id, grace_ms = req["user_id"], req["grace_ms"]
        if not isinstance(user_id, str) or type(grace_ms) is not int:
            raise TypeError("user_id must be a string and grace_ms an integer")
    except (ValueError, KeyError, TypeError) as e:
        return 400, {"errcode": "M_BAD_JSON", "error": str(e)}
    return 200, {"active": hs.push.activity.is_active(user_id, grace_ms / 1000)}
