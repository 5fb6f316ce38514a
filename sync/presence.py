"""Presence: online while a user syncs or acts, unavailable after `idle_after_ms` without
activity, offline `offline_after_ms` after their last sync ends. Kept in memory with one
sweep timer; written to Postgres lazily so a restart remembers last activity.

With several processes and the presence job away from the stream owner
(sync/presence_job.py), the job's process keeps this authoritatively and the stream owner
keeps a *mirror*: the states it reads from the job's stream, and its own count of who is
syncing, which it reports to the job."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from twisted.internet import task

from homeserver.errors import MatrixError
from storage import presence as presence_store
from sync.change_log import ChangeLog
from sync.stream_ids import MemoryStream

if TYPE_CHECKING:
    from homeserver.server import HomeServer

STATES = ("online", "unavailable", "offline")
# A mirror reports everyone syncing this often, and a /sync after a longer gap at once.
REPORT_GAP_MS = 5_000
# A mirror's list of who syncs there counts this long (a mirror that stopped reporting).
REPORT_LEASE_MS = 3 * REPORT_GAP_MS
# Activity told to mirrors when it moved this much without a change of state (they show
# last_active_ago and currently_active from it).
ACTIVITY_REFRESH_MS = 30_000


logger = logging.getLogger(__name__)


def _now() -> int:
    return int(time.time() * 1000)


@dataclass
class UserPresence:
    state: str = "offline"
    status_msg: str | None = None
    last_active_ts: int = 0
    last_sync_ts: int = 0
    syncing: int = 0          # long-polls in progress right now
    stream: int = 0
    explicit: str | None = None  # a state set with PUT presence, honoured while syncing
    reported: str | None = None  # a mirror: the set_presence last reported for the user
    written_active_ts: int = 0   # kept for mirrors: last activity they were told of


class Presence:
    def __init__(self, hs: "HomeServer", on_change: Callable[[str], None]) -> None:
        self.hs = hs
        self.stream = MemoryStream()
        self.log = ChangeLog(0)  # (stream, user) of every change
        self._users: dict[str, UserPresence] = {}
        self._dirty: set[str] = set()
        self.on_change = on_change  # told the user id; wakes those who share a room
        # Mirror mode (the job elsewhere): told of each /sync that should change presence
        # there; None when presence is kept here.
        self.report_sync: Callable[[str, str | None], None] | None = None
        # Kept here with mirrors elsewhere: told of activity that changes no state.
        self.on_activity: Callable[[str], None] | None = None
        # Kept here: who syncs on the processes reporting to this one, by process, with
        # when each last reported.
        self._elsewhere: dict[str, dict[str, str | None]] = {}
        self._reported_at: dict[str, int] = {}
        self._held: dict[str, int] = {}  # taken over at start: not swept before this time
        cfg = hs.config.presence
        self.idle_after_ms = cfg.idle_after_ms
        self.offline_after_ms = cfg.offline_after_ms
        self._sweeper = task.LoopingCall(self._sweep)
        self._flusher = task.LoopingCall(self.flush)

    async def start(self) -> None:
        for user_id, state, status_msg, last_active in await self.hs.db.run(presence_store.load_all):
            # After a restart nobody is syncing yet: everyone starts offline.
            self._users[user_id] = UserPresence("offline", status_msg, last_active)
        self._sweeper.start(min(5.0, self.offline_after_ms / 4000.0), now=False)
        self._flusher.start(10.0, now=False)

    def stop(self) -> None:
        for loop in (self._sweeper, self._flusher):
            if loop.running:
                loop.stop()
        rows = self._dirty_rows()
        if rows:
            self.hs.db.run_sync(presence_store.save, rows)  # shutting down: block is fine

    def count_by_state(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for p in self._users.values():
            counts[p.state] = counts.get(p.state, 0) + 1
        return counts

    def get(self, user_id: str) -> UserPresence:
        return self._users.get(user_id) or UserPresence()

    def _set(self, user_id: str, p: UserPresence, state: str, status_msg: str | None | object = ...) -> None:
        changed = p.state != state
        p.state = state
        if status_msg is not ...:
            changed = changed or p.status_msg != status_msg
            p.status_msg = status_msg  # type: ignore[assignment]
        if changed:
            self._advance(user_id, p)
            self._dirty.add(user_id)
            self.on_change(user_id)

    def _advance(self, user_id: str, p: UserPresence) -> None:
        p.stream = self.stream.advance()
        self.log.record(p.stream, user_id)

    def set_status(self, user_id: str, state: str, status_msg: str | None) -> None:
        if self.report_sync is not None:  # a mirror's ids are the keeper's: never its own
            raise MatrixError(503, "M_UNKNOWN", "presence is kept by another process; retry")
        p = self._users.setdefault(user_id, UserPresence())
        p.explicit = state
        if state == "online":
            p.last_active_ts = _now()
        self._set(user_id, p, state, status_msg)

    def user_active(self, user_id: str) -> None:
        """An action (sending a message...) marks the user online and active."""
        p = self._users.setdefault(user_id, UserPresence())
        was_stale = _now() - p.last_active_ts > 60_000
        p.last_active_ts = _now()
        before = p.stream
        if p.explicit in (None, "online"):
            self._set(user_id, p, "online")
        elif was_stale:
            self._advance(user_id, p)
            self.on_change(user_id)
        if p.stream == before and self.on_activity is not None \
                and p.last_active_ts - p.written_active_ts > ACTIVITY_REFRESH_MS:
            self.on_activity(user_id)

    def set_remote(self, user_id: str, update: dict) -> None:
        """Presence of another server's user, as its m.presence EDU tells it (federation);
        never swept here: that server says when it changes."""
        state = update.get("presence")
        if state not in STATES:
            return
        p = self._users.setdefault(user_id, UserPresence())
        ago = update.get("last_active_ago")
        if isinstance(ago, int) and ago >= 0:
            p.last_active_ts = _now() - ago
        msg = update.get("status_msg")
        self._set(user_id, p, state, msg if isinstance(msg, str) else None)

    def sync_started(self, user_id: str, set_presence: str | None) -> None:
        p = self._users.setdefault(user_id, UserPresence())
        p.syncing += 1
        last, p.last_sync_ts = p.last_sync_ts, _now()
        if self.report_sync is not None:  # a mirror: the keeper decides, told when it may change
            back = p.syncing == 1 and p.last_sync_ts - last > REPORT_GAP_MS
            if back or set_presence != p.reported:
                p.reported = set_presence
                self.report_sync(user_id, set_presence)
            return
        self._syncing(user_id, p, set_presence)

    def _syncing(self, user_id: str, p: UserPresence, set_presence: str | None) -> None:
        """A /sync of the user (here or on a process reporting it) with `set_presence`."""
        wanted = set_presence or p.explicit or "online"
        if wanted == "offline":
            return  # syncing with set_presence=offline leaves presence alone
        if wanted == "online" and p.state != "online":
            p.last_active_ts = _now()
        if wanted != p.state and not (wanted == "online" and p.explicit == "unavailable"):
            self._set(user_id, p, wanted)

    def sync_finished(self, user_id: str) -> None:
        p = self._users.get(user_id)
        if p is not None:
            p.syncing = max(0, p.syncing - 1)
            p.last_sync_ts = _now()

    def syncing_users(self) -> list[tuple[str, str | None]]:
        """A mirror: (user, set_presence) of those syncing now, or within the last
        REPORT_GAP_MS (clients that poll briefly)."""
        since = _now() - REPORT_GAP_MS
        return [(u, p.reported) for u, p in self._users.items() if p.syncing > 0 or p.last_sync_ts > since]

    def remote_syncing(self, reporter: str, started: list[tuple[str, str | None]],
                       syncing: list[tuple[str, str | None]] | None) -> None:
        """Kept here for other sync processes (sync/presence_job.py): /syncs that started
        on `reporter`, and now and then everyone syncing there with their set_presence (a
        user left out has stopped there). Each counts as a /sync here does."""
        now = _now()
        self._reported_at[reporter] = now
        there = self._elsewhere.setdefault(reporter, {})
        if syncing is not None:
            there.clear()
        for user_id, set_presence in [*started, *(syncing or ())]:
            p = self._users.setdefault(user_id, UserPresence())
            p.last_sync_ts = now
            there[user_id] = set_presence
            self._syncing(user_id, p, set_presence)

    def _syncing_elsewhere(self, user_id: str) -> bool:
        if not self._elsewhere:
            return False
        fresh = _now() - REPORT_LEASE_MS
        return any(user_id in users and self._reported_at.get(r, 0) > fresh for r, users in self._elsewhere.items())

    def load_mirror(self, rows: list[tuple[int, str, str, str | None, int]]) -> None:
        """A mirror starting: each user's newest state as the job announced it."""
        for stream_id, user_id, state, status_msg, last_active_ts in rows:
            p = self._users.setdefault(user_id, UserPresence())
            p.state, p.status_msg, p.last_active_ts, p.stream = state, status_msg, last_active_ts, stream_id
        position = max((r[0] for r in rows), default=0)
        self.stream.current = position
        self.log = ChangeLog(position)

    def apply_change(self, stream_id: str | int, user_id: str, state: str, status_msg: str | None,
                     last_active_ts: int, activity_only: bool = False) -> None:
        """A mirror: a change the keeper announced, at its stream id. Fresher activity
        alone wakes nobody, as where presence is kept."""
        p = self._users.setdefault(user_id, UserPresence())
        self.stream.advance_to(int(stream_id))
        p.state, p.status_msg, p.last_active_ts = state, status_msg, last_active_ts
        if activity_only:
            return
        p.stream = int(stream_id)
        self.log.record(p.stream, user_id)
        self.on_change(user_id)

    def take_over(self, rows: list[tuple[int, str, str, str | None, int]]) -> None:
        """The keeper starting: ids go on from its stream's (sync tokens hold them), and
        users it last showed present stay so until the sweep finds nobody syncing them
        (the mirrors report theirs within seconds), so a restart makes nobody flap."""
        now = _now()
        position = max((r[0] for r in rows), default=0)
        self.stream.advance_to(position)
        self.log = ChangeLog(self.stream.current)
        for stream_id, user_id, state, status_msg, last_active_ts in rows:
            if state == "offline":
                continue
            p = self._users.setdefault(user_id, UserPresence())
            p.state, p.status_msg, p.stream = state, status_msg, stream_id
            p.last_active_ts = max(p.last_active_ts, last_active_ts)
            p.last_sync_ts = now
            self._held[user_id] = now + REPORT_LEASE_MS  # until the mirrors have reported

    def _sweep(self) -> None:
        now = _now()
        if self._held and max(self._held.values()) <= now:
            self._held = {}
        for user_id, p in self._users.items():
            if p.state == "offline" or not self.hs.accounts.is_mine(user_id):
                continue  # (other servers' users: their server reports changes)
            # Offline once neither syncing nor acting (a bot that only sends still counts).
            if self._held and self._held.get(user_id, 0) > now:
                continue
            if p.syncing == 0 and not self._syncing_elsewhere(user_id) \
                    and now - max(p.last_sync_ts, p.last_active_ts) > self.offline_after_ms:
                self._set(user_id, p, "offline")
            elif p.state == "online" and now - p.last_active_ts > self.idle_after_ms:
                self._set(user_id, p, "unavailable")

    def _dirty_rows(self) -> list[tuple]:
        rows = [(u, self._users[u].state, self._users[u].status_msg, self._users[u].last_active_ts)
                for u in self._dirty]
        self._dirty = set()
        return rows

    def flush(self):
        rows = self._dirty_rows()
        if not rows:
            return None
        d = self.hs.db.run(presence_store.save, rows)

        def failed(f):  # keep the loop alive and the rows for the next try
            logger.warning("saving presence failed: %s", f.getErrorMessage())
            self._dirty.update(r[0] for r in rows)
        return d.addErrback(failed)

    def event_for(self, user_id: str) -> dict:
        p = self.get(user_id)
        content: dict = {"presence": p.state}
        if p.last_active_ts:
            content["last_active_ago"] = max(0, _now() - p.last_active_ts)
        if p.state == "online":
            content["currently_active"] = _now() - p.last_active_ts < 60_000 or p.syncing > 0 \
                or self._syncing_elsewhere(user_id)
        if p.status_msg:
            content["status_msg"] = p.status_msg
        return {"type": "m.presence", "sender": user_id, "content": content}

    def changed_since(self, user_ids, since: int) -> list[str]:
        if since > self.stream.current:
            since = 0  # token from a previous process: send everything we know
        return [u for u in user_ids if u in self._users and self._users[u].stream > since]

    def changed_after(self, since: int) -> set[str] | None:
        """Users whose presence changed after `since`, from the change log; None when the
        log cannot tell (a token from a previous process, or older than the log)."""
        if since > self.stream.current:
            return None
        return self.log.changed_after(since)

    def is_known_online(self, user_id: str) -> bool:
        p = self._users.get(user_id)
        return p is not None and p.state != "offline"
