"""The room versions we speak (10, 11 and 12) and the rule switches that differ between them."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RoomVersion:
    identifier: str
    # v11+: the create event's sender is the creator (no `creator` key), `redacts` lives in content
    create_sender_is_creator: bool
    redacts_in_content: bool
    # v11 redaction algorithm (keeps all create content, `invite` in power levels, etc.)
    v11_redaction: bool
    # v12: room id is the create event's reference hash; create event is never an auth event
    room_id_from_create: bool
    # v12: sender + content.additional_creators have infinite power level
    privileged_creators: bool


V10 = RoomVersion("10", False, False, False, False, False)
V11 = RoomVersion("11", True, True, True, False, False)
V12 = RoomVersion("12", True, True, True, True, True)

KNOWN_ROOM_VERSIONS: dict[str, RoomVersion] = {v.identifier: v for v in (V10, V11, V12)}
DEFAULT_ROOM_VERSION = V12
