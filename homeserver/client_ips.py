"""Where and with what each device was last seen (IP, user agent, time), for the admin
API's whois and device lists. Noted in memory on every authenticated request and written
to the devices table every few seconds and at shutdown (`write_behind.py`), so requests
never wait for it."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from homeserver.write_behind import WriteBehind
from storage.database import Cursor, execute_values

if TYPE_CHECKING:
    from homeserver.server import HomeServer

FLUSH_EVERY_S = 5.0
_MAX_USER_AGENT = 512

Seen = tuple[str, str | None, int]  # (ip, user agent, ts)


def _save(cur: Cursor, seen: dict[tuple[str, str], Seen]) -> None:
    execute_values(
        cur,
        "UPDATE devices d SET last_seen_ip = v.ip, last_seen_user_agent = v.ua, last_seen_ts = v.ts"
        " FROM (VALUES %s) AS v(user_id, device_id, ip, ua, ts)"
        " WHERE d.user_id = v.user_id AND d.device_id = v.device_id",
        [(u, d, ip, ua, ts) for (u, d), (ip, ua, ts) in seen.items()])


class ClientIps:
    def __init__(self, hs: "HomeServer") -> None:
        self._writes: WriteBehind[tuple[str, str], Seen] = WriteBehind(
            hs, _save, FLUSH_EVERY_S, "devices' last-seen data")

    def start(self) -> None:
        self._writes.start()

    def seen(self, user_id: str, device_id: str, ip: str, headers: Any) -> None:
        ua = headers.getRawHeaders(b"user-agent")
        self._writes.note((user_id, device_id), (
            ip, ua[0][:_MAX_USER_AGENT].decode("utf-8", "replace") if ua else None, int(time.time() * 1000)))

    def pending_for(self, user_id: str) -> dict[str, Seen]:
        return {d: seen for (u, d), seen in self._writes.pending.items() if u == user_id}

    def stop(self) -> None:
        self._writes.stop()
