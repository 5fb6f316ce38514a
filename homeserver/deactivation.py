"""Deactivating an account (by its user or by an admin), and GDPR erasure.

Deactivation: the user leaves every room (and rejects invites) while they still can,
then loses devices, keys, tokens, password and profile. Erasure additionally marks the
user erased and prunes, in place, every event they sent that is not part of a room's
current state, to what a redaction leaves (type, sender, ids, hashes and signatures stay,
so event ids still verify). Unlike Synapse, which hides an erased user's messages only
from users who join later, everyone sees them pruned from then on."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from homeserver.errors import MatrixError
from storage import admin_users as admin_users_store
from storage import purge as purge_store
from storage import state as state_store

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)
ERASE_BATCH = 500


async def deactivate_user(hs: "HomeServer", user_id: str, erase: bool = False) -> None:
    for room_id in await hs.db.run(state_store.rooms_for_user, user_id, ("join", "invite", "knock")):
        try:
            await hs.membership.set_membership(user_id, room_id, user_id, "leave")
        except MatrixError:
            pass  # e.g. already gone: deactivation goes on
    await hs.accounts.deactivate(user_id)
    if erase:
        await erase_user(hs, user_id)


async def erase_user(hs: "HomeServer", user_id: str) -> int:
    """Mark erased and prune the user's events; returns how many were pruned."""
    from homeserver.admin_tasks import forget_events, prune_json  # shares the write-through

    await hs.db.run(admin_users_store.mark_erased, user_id)
    after, total = 0, 0
    while True:
        rows = await hs.db.run(purge_store.user_events_to_erase, user_id, after, ERASE_BATCH)
        if not rows:
            break
        after = rows[-1][0]
        by_room: dict[str, list[tuple[str, str]]] = {}
        for _so, event_id, room_id, text in rows:
            head = await hs.room_heads.get(room_id)
            if head is None:
                continue
            by_room.setdefault(room_id, []).append((event_id, prune_json(text, head.room_version)))
        for room_id, pruned in by_room.items():
            await hs.db.run(purge_store.replace_json, room_id, pruned)
            forget_events(hs, room_id, [], [eid for eid, _ in pruned])
            total += len(pruned)
    logger.info("erased %s: %d events pruned", user_id, total)
    return total
