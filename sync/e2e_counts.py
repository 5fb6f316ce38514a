"""The end-to-end key counts /sync reports to each device: its unclaimed one-time keys
per algorithm (device_one_time_keys_count) and the algorithms of its fallback keys that
nobody has claimed yet (device_unused_fallback_key_types)."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from storage import e2e_keys as store

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)
INVALIDATION = "e2e_counts"  # "user device": keys uploaded or claimed (several sync processes)


async def one_time_key_counts(hs: "HomeServer", user_id: str, device_id: str) -> dict[str, int]:
    counts = await hs.db.run(store.one_time_key_counts, user_id, device_id)
    # Some clients treat an absent signed_curve25519 count as "unknown" rather than zero
    # and never top up; always reporting it is allowed and avoids that.
    counts.setdefault("signed_curve25519", 0)
    return counts


async def unused_fallback_key_types(hs: "HomeServer", user_id: str, device_id: str) -> list[str]:
    return await hs.db.run(store.unused_fallback_key_types, user_id, device_id)


class E2ECounts:
    """Both figures per device, cached in memory so an idle /sync reads no table; the key
    endpoints call `invalidate` when they change a device's keys."""

    def __init__(self, hs: "HomeServer") -> None:
        self.hs = hs
        self._cache: dict[tuple[str, str], tuple[dict[str, int], list[str]]] = {}
        self._generation: dict[tuple[str, str], int] = {}
        if hs.replication is not None:  # several sync processes: each caches them
            hs.replication.on_invalidate(INVALIDATION, lambda key: self._forget(*key.split(" ", 1)))

    def invalidate(self, user_id: str, device_id: str) -> None:
        self._forget(user_id, device_id)
        self.hs.invalidate_elsewhere(INVALIDATION, f"{user_id} {device_id}").addErrback(
            lambda f: logger.warning("announcing new key counts of %s failed: %s", user_id, f.getErrorMessage()))

    def _forget(self, user_id: str, device_id: str) -> None:
        key = (user_id, device_id)
        self._cache.pop(key, None)
        self._generation[key] = self._generation.get(key, 0) + 1

    async def get(self, user_id: str, device_id: str) -> tuple[dict[str, int], list[str]]:
        key = (user_id, device_id)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        generation = self._generation.get(key, 0)
        counts = await one_time_key_counts(self.hs, user_id, device_id)
        fallback = await unused_fallback_key_types(self.hs, user_id, device_id)
        if self._generation.get(key, 0) == generation:  # nothing changed while we read
            self._cache[key] = (counts, fallback)
        return counts, fallback
