"""Rate limits: in-memory token buckets per process, checked without the database.

A bucket for (limit, key) fills by one per action and drains at `per_second`; an action
that would take it over `burst_count` is refused with 429 M_LIMIT_EXCEEDED, its
`retry_after_ms` the time until it would fit (also as `Retry-After`, whole seconds).
Exempt: application services whose registration says `rate_limited: false` (and the
users they act as), server admins, and users whose admin override says 0/0. A per-user
override (our admin API, stored in `ratelimit_override`, kept in memory) replaces the
rate of that user's own limits (messages, joins, invites sent, media)."""
from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Callable

from homeserver.config import RateLimit
from homeserver.errors import MatrixError
from storage import push as push_store

if TYPE_CHECKING:
    from client_api.http import Req
    from homeserver.server import HomeServer

OVERRIDES_INVALIDATION = "ratelimit_overrides"
_SWEEP_EVERY = 10_000  # checks between sweeps of drained buckets


class RateLimited(MatrixError):
    def __init__(self, retry_after_s: float) -> None:
        retry_ms = max(1, math.ceil(retry_after_s * 1000))
        super().__init__(429, "M_LIMIT_EXCEEDED", "too many requests; retry later", retry_after_ms=retry_ms)
        self.headers = {b"Retry-After": str(max(1, math.ceil(retry_after_s))).encode()}


class Buckets:
    """The arithmetic, apart from the server (unit-tested with a fake clock)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._levels: dict[tuple[str, str], tuple[float, float]] = {}  # -> (level, at)
        self._checks = 0

    def wait_needed(self, name: str, key: str, per_second: float, burst: float, cost: float = 1.0) -> float:
        """Seconds until the action fits (0: it fits now). Takes nothing."""
        level = self._level(name, key, per_second, self._clock())
        return max(0.0, (level + cost - burst) / per_second)

    def take(self, name: str, key: str, per_second: float, burst: float, cost: float = 1.0) -> float:
        """Takes the action if it fits and returns 0, else the seconds to wait."""
        now = self._clock()
        level = self._level(name, key, per_second, now)
        if level + cost > burst:
            return (level + cost - burst) / per_second
        self._levels[(name, key)] = (level + cost, now)
        self._checks += 1
        if self._checks % _SWEEP_EVERY == 0:
            self._sweep(now)
        return 0.0

    def _level(self, name: str, key: str, per_second: float, now: float) -> float:
        found = self._levels.get((name, key))
        if found is None:
            return 0.0
        level, at = found
        return max(0.0, level - (now - at) * per_second)

    def _sweep(self, now: float) -> None:
        # A bucket left alone for an hour is empty at any rate anyone configures.
        stale = [k for k, (_, at) in self._levels.items() if now - at > 3600]
        for k in stale:
            del self._levels[k]

    def __len__(self) -> int:
        return len(self._levels)


class Ratelimiter:
    """Attached as `hs.ratelimiter` by the composition root."""

    def __init__(self, hs: "HomeServer") -> None:
        self.hs = hs
        self.buckets = Buckets()
        self._overrides: dict[str, tuple[float, float]] | None = None
        self._changed_elsewhere = 0  # notices heard: a load begun before one is stale
        if hs.replication is not None:
            hs.replication.on_invalidate(OVERRIDES_INVALIDATION, self.override_changed_elsewhere)

    async def _override_of(self, user_id: str) -> tuple[float, float] | None:
        while self._overrides is None:
            heard = self._changed_elsewhere
            loaded = await self.hs.db.run(push_store.all_ratelimit_overrides)
            if self._overrides is None and heard == self._changed_elsewhere:
                self._overrides = loaded
        return self._overrides.get(user_id)

    async def set_override(self, user_id: str, per_second: float, burst: float) -> None:
        await self.hs.db.run(push_store.set_ratelimit_override, user_id, per_second, burst)
        await self._override_of(user_id)
        assert self._overrides is not None
        self._overrides[user_id] = (per_second, burst)
        await self._tell_others(user_id)

    async def delete_override(self, user_id: str) -> bool:
        deleted = await self.hs.db.run(push_store.delete_ratelimit_override, user_id)
        await self._override_of(user_id)
        assert self._overrides is not None
        self._overrides.pop(user_id, None)
        await self._tell_others(user_id)
        return deleted

    async def _tell_others(self, user_id: str) -> None:
        await self.hs.invalidate_elsewhere(OVERRIDES_INVALIDATION, user_id)

    def override_changed_elsewhere(self, user_id: str) -> None:
        """Another process changed `user_id`'s override: read them all again when next
        needed (a handful of rows, changed by hand)."""
        self._changed_elsewhere += 1
        self._overrides = None

    async def get_override(self, user_id: str) -> tuple[float, float] | None:
        return await self._override_of(user_id)

    @staticmethod
    def exempt(req: "Req") -> bool:
        requester = req.requester
        if requester is None:
            return False
        if requester.app_service is not None and not requester.app_service.rate_limited:
            return True
        return requester.is_admin

    async def _user_limit(self, user_id: str, limit: RateLimit) -> tuple[float, float] | None:
        """(per_second, burst) for this user, or None when the user is not limited."""
        override = await self._override_of(user_id)
        if override is not None:
            per_second, burst = override
            if per_second <= 0 or burst <= 0:
                return None
            return per_second, burst
        return limit.per_second, limit.burst_count

    async def check_user(self, req: "Req", name: str, limit: RateLimit) -> None:
        """One action of the requester against their own bucket of `name`."""
        if self.exempt(req):
            return
        user_id = req.user_id
        rate = await self._user_limit(user_id, limit)
        if rate is None:
            return
        wait = self.buckets.take(name, user_id, *rate)
        if wait:
            raise RateLimited(wait)

    async def check_all(self, req: "Req", checks: list[tuple[str, str, RateLimit, bool]]) -> None:
        """Several buckets for one action, all or nothing: (name, key, limit, is the
        requester's own). Refused if any is full; else one is taken from each."""
        if self.exempt(req):
            return
        resolved = []
        for name, key, limit, own in checks:
            rate = await self._user_limit(req.user_id, limit) if own else (limit.per_second, limit.burst_count)
            if rate is not None:
                resolved.append((name, key, rate))
        wait = max((self.buckets.wait_needed(n, k, *r) for n, k, r in resolved), default=0.0)
        if wait:
            raise RateLimited(wait)
        for name, key, rate in resolved:
            self.buckets.take(name, key, *rate)

    def check_key(self, name: str, key: str, limit: RateLimit, take: bool = True) -> None:
        """A bucket not tied to a requester (a client IP, an account being logged into)."""
        wait = (self.buckets.take if take else self.buckets.wait_needed)(
            name, key, limit.per_second, limit.burst_count)
        if wait:
            raise RateLimited(wait)
