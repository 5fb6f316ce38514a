"""A room's join rule as the client-facing features read it (restricted joins, the space
hierarchy, knocking): which rule applies, which rooms a restricted rule names, and
whether a user is in one of them. The auth rules proper live in `auth_rules.py`."""
from __future__ import annotations

from typing import TYPE_CHECKING

from homeserver.ids import is_valid_room_id
from homeserver.room_heads import RoomHead

if TYPE_CHECKING:
    from homeserver.server import HomeServer

RESTRICTED_RULES = ("restricted", "knock_restricted")
KNOCK_RULES = ("knock", "knock_restricted")  # room versions 7+ / 10+; we speak 10-12


def join_rule(head: RoomHead) -> str:
    """The current rule; a room without a join rules event behaves as invite-only."""
    event = head.state.get(("m.room.join_rules", ""))
    rule = event.content.get("join_rule") if event is not None else None
    return rule if isinstance(rule, str) else "invite"


def allowed_room_ids(head: RoomHead) -> list[str]:
    """The rooms an `m.room_membership` allow rule names, for restricted rules only."""
    if join_rule(head) not in RESTRICTED_RULES:
        return []
    rules = head.state[("m.room.join_rules", "")].content.get("allow")
    found: list[str] = []
    for rule in rules if isinstance(rules, list) else []:
        if isinstance(rule, dict) and rule.get("type") == "m.room_membership":
            room_id = rule.get("room_id")
            if isinstance(room_id, str) and is_valid_room_id(room_id) and "\x00" not in room_id \
                    and room_id not in found:
                found.append(room_id)
    return found


async def in_allowed_room(hs: "HomeServer", head: RoomHead, user_id: str) -> bool:
    """Is the user joined to a room the restricted rule names?"""
    for room_id in allowed_room_ids(head):
        other = await hs.room_heads.get(room_id)
        if other is not None and other.membership_of(user_id) == "join":
            return True
    return False
