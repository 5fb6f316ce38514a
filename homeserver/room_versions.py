"""Every room version the spec defines (1 to 12) as one record of rule switches.

Each version is the one before it with a few switches flipped (`_next`), so the
differences read as a list; the code that applies a rule asks the switch, never the
version number. `docs/room-versions.md` maps each switch to where it is handled.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

StateResVersion = Literal["v1", "v2", "v2.1"]


@dataclass(frozen=True)
class RoomVersion:
    identifier: str
    # -- event format ---------------------------------------------------------------
    # v3+: the event id is the reference hash (no `event_id` in the PDU; prev_events and
    # auth_events are plain id lists). v1/v2: `$opaque:server` ids carried in the PDU,
    # prev_events/auth_events are [event_id, {"sha256": reference hash}] pairs.
    event_ids_are_hashes: bool = False
    # v4+: the reference hash is encoded URL-safe (v3: standard unpadded base64).
    urlsafe_event_ids: bool = False
    # v6+: PDUs must be canonical JSON (no floats, integers within +-(2**53-1)).
    strict_canonical_json: bool = False
    # v12: the room id is "!" + the create event's id; the create event has no room_id
    # and is never listed in auth_events (the room id implies it).
    room_id_from_create: bool = False
    # v11+: the create event's sender is the creator (no `creator` key in content).
    create_sender_is_creator: bool = False
    # v11+: m.room.redaction carries `redacts` in content, not at the top level.
    redacts_in_content: bool = False
    # -- redaction algorithm ----------------------------------------------------------
    # v11 algorithm: top-level origin/membership/prev_state no longer kept; the whole
    # create content, power levels `invite`, redaction `redacts` and the
    # third_party_invite `signed` block survive.
    v11_redaction: bool = False
    # -- state resolution -------------------------------------------------------------
    state_res: StateResVersion = "v1"
    # -- authorisation rules ----------------------------------------------------------
    # v1/v2: m.room.redaction has its own auth rule (redact level, or the same server
    # as the redacted event's id). v3+: only the ordinary required level applies.
    redaction_auth_rule: bool = True
    # v1-v5: m.room.aliases has its own auth rule (state_key = sender's server) and
    # keeps `aliases` through redaction.
    special_case_aliases: bool = True
    # v6+: `notifications` levels in m.room.power_levels are checked like `events`.
    limit_notifications_power_levels: bool = False
    # v5+: signing keys must be valid at the event's origin_server_ts (federation).
    enforce_key_validity: bool = False
    # v7+: the `knock` join rule and membership.
    knock_join_rule: bool = False
    # v8+: the `restricted` join rule (join_authorised_via_users_server), and
    # m.room.join_rules keeps `allow` through redaction.
    restricted_join_rule: bool = False
    # v9+: m.room.member keeps join_authorised_via_users_server through redaction.
    restricted_join_rule_fix: bool = False
    # v10+: the `knock_restricted` join rule.
    knock_restricted_join_rule: bool = False
    # v10+: power levels must be JSON integers. Before: integer strings count ("+050");
    # before v6 floats count too (truncated).
    enforce_int_power_levels: bool = False
    # v12: the creators (sender + content.additional_creators) have infinite power and
    # may not be listed in m.room.power_levels.
    privileged_creators: bool = False

    @property
    def float_power_levels(self) -> bool:
        """v1-v5 PDUs need not be canonical JSON, so power levels may be floats."""
        return not self.strict_canonical_json


def _next(base: RoomVersion, identifier: str, **changes: object) -> RoomVersion:
    return replace(base, identifier=identifier, **changes)


V1 = RoomVersion("1")
V2 = _next(V1, "2", state_res="v2")
V3 = _next(V2, "3", event_ids_are_hashes=True, redaction_auth_rule=False)
V4 = _next(V3, "4", urlsafe_event_ids=True)
V5 = _next(V4, "5", enforce_key_validity=True)
V6 = _next(V5, "6", strict_canonical_json=True, special_case_aliases=False,
           limit_notifications_power_levels=True)
V7 = _next(V6, "7", knock_join_rule=True)
V8 = _next(V7, "8", restricted_join_rule=True)
V9 = _next(V8, "9", restricted_join_rule_fix=True)
V10 = _next(V9, "10", knock_restricted_join_rule=True, enforce_int_power_levels=True)
V11 = _next(V10, "11", create_sender_is_creator=True, redacts_in_content=True,
            v11_redaction=True)
V12 = _next(V11, "12", state_res="v2.1", room_id_from_create=True, privileged_creators=True)

ALL_ROOM_VERSIONS: tuple[RoomVersion, ...] = (V1, V2, V3, V4, V5, V6, V7, V8, V9, V10, V11, V12)
KNOWN_ROOM_VERSIONS: dict[str, RoomVersion] = {v.identifier: v for v in ALL_ROOM_VERSIONS}
DEFAULT_ROOM_VERSION = V12
