"""The redaction algorithm of room versions 10 (v9 rules) and 11/12 (v11 rules)."""
from __future__ import annotations

from typing import Any

from homeserver.room_versions import RoomVersion

_TOP_KEYS_V9 = frozenset({
    "event_id", "type", "room_id", "sender", "state_key", "content", "hashes",
    "signatures", "depth", "prev_events", "prev_state", "auth_events", "origin",
    "origin_server_ts", "membership",
})
# v11 dropped `origin`, `membership` and `prev_state` from the kept keys.
_TOP_KEYS_V11 = _TOP_KEYS_V9 - {"origin", "membership", "prev_state"}

_CONTENT_KEYS_V9: dict[str, frozenset[str]] = {
    "m.room.member": frozenset({"membership", "join_authorised_via_users_server"}),
    "m.room.create": frozenset({"creator"}),
    "m.room.join_rules": frozenset({"join_rule", "allow"}),
    "m.room.power_levels": frozenset({
        "ban", "events", "events_default", "kick", "redact", "state_default", "users",
        "users_default",
    }),
    "m.room.history_visibility": frozenset({"history_visibility"}),
}
_CONTENT_KEYS_V11: dict[str, frozenset[str]] = {
    **_CONTENT_KEYS_V9,
    "m.room.power_levels": _CONTENT_KEYS_V9["m.room.power_levels"] | {"invite"},
    "m.room.redaction": frozenset({"redacts"}),
}


def prune_event_dict(pdu: dict[str, Any], rv: RoomVersion) -> dict[str, Any]:
    """Return a copy of `pdu` reduced to what survives a redaction in room version `rv`.
    `unsigned` is kept apart: callers that serve to clients re-attach what they need."""
    top = _TOP_KEYS_V11 if rv.v11_redaction else _TOP_KEYS_V9
    pruned = {k: v for k, v in pdu.items() if k in top}
    event_type = pdu.get("type")
    content = pdu.get("content")
    content = content if isinstance(content, dict) else {}
    if rv.v11_redaction and event_type == "m.room.create":
        new_content = dict(content)  # v11: the whole create content survives
    else:
        keys_by_type = _CONTENT_KEYS_V11 if rv.v11_redaction else _CONTENT_KEYS_V9
        allowed = keys_by_type.get(event_type, frozenset())
        new_content = {k: v for k, v in content.items() if k in allowed}
        if rv.v11_redaction and event_type == "m.room.member":
            tpi = content.get("third_party_invite")
            if isinstance(tpi, dict) and "signed" in tpi:
                new_content["third_party_invite"] = {"signed": tpi["signed"]}
    pruned["content"] = new_content
    return pruned
