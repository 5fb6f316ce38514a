"""Where and with what each device was last seen (IP, user agent, time), for the admin
API's whois and device lists. Noted in memory on every authenticated request (a dict
write) and written to the devices table every few seconds and at shutdown, so requests
never wait for it."""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from twisted.internet import task

from storage.database import Cursor, execute_values

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)
FLUSH_EVERY_S = 5.0
_MAX_USER_AGENT = 512

Seen = tuple[str, str | None, int]  # (ip, user agent, ts)


def _save(cur: Cursor, rows: list[tuple[str, str, str, str | None, int]]) -> None:
    execute_values(
        cur,
        "UPDATE devices d SET last_seen_ip = v.ip, last_seen_user_agent = v.ua, last_seen_ts = v.ts"
        " FROM (VALUES %s) AS v(user_id, device_id, ip, ua, ts)"
        " WHERE d.user_id = v.user_id AND d.device_id = v.device_id",
        rows)


class ClientIps:
    def __init__(self, hs: "HomeServer") -> None:
        self.hs = hs
        self._pending: dict[tuple[str, str], Seen] = {}
        self._loop = task.LoopingCall(self.flush)

    def start(self) -> None:
        self._loop.start(FLUSH_EVERY_S, now=False)

    def seen(self, user_id: str, device_id: str, ip: str, headers: Any) -> None:
        ua = headers.getRawHeaders(b"user-agent")
        self._pending[(user_id, device_id)] = (
            ip, ua[0][:_MAX_USER_AGENT].decode("utf-8", "replace") if ua else None, int(time.time() * 1000))

    def pending_for(self, user_id: str) -> dict[str, Seen]:
        return {d: seen for (u, d), seen in self._pending.items() if u == user_id}

    def _take(self) -> list[tuple]:
        rows = [(u, d, ip, ua, ts) for (u, d), (ip, ua, ts) in self._pending.items()]
        self._pending = {}
        return rows

    def flush(self):
        rows = self._take()
        if not rows:
            return None

        def failed(f):  # keep the loop alive; the next request refills the data
            logger.warning("saving devices' last-seen data failed: %s", f.getErrorMessage())
        return self.hs.db.run(_save, rows).addErrback(failed)

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()
        rows = self._take()
        if rows:
            self.hs.db.run_sync(_save, rows)  # shutting down: blocking is fine
