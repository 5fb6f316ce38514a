"""The redaction algorithm of every room version: which top-level keys and which content
keys of which event types survive. v1 is the base; v6, v8, v9 and v11 changed it."""
from __future__ import annotations

from typing import Any

from homeserver.room_versions import RoomVersion

_TOP_KEYS = frozenset({
    "event_id", "type", "room_id", "sender", "state_key", "content", "hashes",
    "signatures", "depth", "prev_events", "prev_state", "auth_events", "origin",
    "origin_server_ts", "membership",
})
# v11 dropped `origin`, `membership` and `prev_state` from the kept keys.
_TOP_KEYS_V11 = _TOP_KEYS - {"origin", "membership", "prev_state"}

_POWER_LEVEL_KEYS = frozenset({
    "ban", "events", "events_default", "kick", "redact", "state_default", "users",
    "users_default",
})


def _kept_content_keys(event_type: Any, rv: RoomVersion) -> frozenset[str]:
    if event_type == "m.room.member":
        if rv.restricted_join_rule_fix:
            return frozenset({"membership", "join_authorised_via_users_server"})
        return frozenset({"membership"})
    if event_type == "m.room.create":
        return frozenset() if rv.create_sender_is_creator else frozenset({"creator"})
    if event_type == "m.room.join_rules":
        return frozenset({"join_rule", "allow"}) if rv.restricted_join_rule else frozenset({"join_rule"})
    if event_type == "m.room.power_levels":
        return _POWER_LEVEL_KEYS | {"invite"} if rv.v11_redaction else _POWER_LEVEL_KEYS
    if event_type == "m.room.history_visibility":
        return frozenset({"history_visibility"})
    if event_type == "m.room.aliases" and rv.special_case_aliases:
        return frozenset({"aliases"})
    if event_type == "m.room.redaction" and rv.v11_redaction:
        return frozenset({"redacts"})
    return frozenset()


def prune_event_dict(pdu: dict[str, Any], rv: RoomVersion) -> dict[str, Any]:
    """Return a copy of `pdu` reduced to what survives a redaction in room version `rv`.
    `unsigned` is kept apart: callers that serve to clients re-attach what they need."""
    top = _TOP_KEYS_V11 if rv.v11_redaction else _TOP_KEYS
    pruned = {k: v for k, v in pdu.items() if k in top}
    event_type = pdu.get("type")
    content = pdu.get("content")
    content = content if isinstance(content, dict) else {}
    if rv.v11_redaction and event_type == "m.room.create":
        new_content = dict(content)  # v11: the whole create content survives
    else:
        allowed = _kept_content_keys(event_type, rv)
        new_content = {k: v for k, v in content.items() if k in allowed}
    if rv.v11_redaction and event_type == "m.room.member":
        # v11 keeps third_party_invite reduced to its `signed` block ({} without one),
        # as Synapse does: reference hashes must agree across servers.
        tpi = content.get("third_party_invite")
        if isinstance(tpi, dict):
            new_content["third_party_invite"] = {"signed": tpi["signed"]} if "signed" in tpi else {}
    pruned["content"] = new_content
    return pruned
