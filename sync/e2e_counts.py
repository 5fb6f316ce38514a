"""The end-to-end key counts /sync reports to each device: its unclaimed one-time keys
per algorithm (device_one_time_keys_count) and the algorithms of its fallback keys that
nobody has claimed yet (device_unused_fallback_key_types)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from storage import e2e_keys as store

if TYPE_CHECKING:
    from homeserver.server import HomeServer


async def one_time_key_counts(hs: "HomeServer", user_id: str, device_id: str) -> dict[str, int]:
    counts = await hs.db.run(store.one_time_key_counts, user_id, device_id)
    # Some clients treat an absent signed_curve25519 count as "unknown" rather than zero
    # and never top up; always reporting it is allowed and avoids that.
    counts.setdefault("signed_curve25519", 0)
    return counts


async def unused_fallback_key_types(hs: "HomeServer", user_id: str, device_id: str) -> list[str]:
    return await hs.db.run(store.unused_fallback_key_types, user_id, device_id)
