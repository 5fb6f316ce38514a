"""Checking the shape of a PDU received from another server, its content hash, and its
id; pure functions. A PDU whose content hash does not match is kept in its redacted form
(the spec: "redact on mismatch"), since the signature covers only that form."""
from __future__ import annotations

from typing import Any

from homeserver import auth_rules
from homeserver.canonical_json import CanonicalJsonError
from homeserver.event import Event
from homeserver.event_hashing import check_content_hash, compute_event_id
from homeserver.redaction import prune_event_dict
from homeserver.room_versions import RoomVersion

MAX_PREV_EVENTS = 20
MAX_AUTH_EVENTS = 10
MAX_DEPTH = 2**63 - 1


class PduFormatError(ValueError):
    """The PDU is malformed; it is dropped (not stored, not rejected)."""


def _references(value: Any, rv: RoomVersion, name: str, limit: int) -> None:
    if not isinstance(value, list) or len(value) > limit:
        raise PduFormatError(f"{name} must be a list of at most {limit} events")
    for ref in value:
        if rv.event_ids_are_hashes:
            ok = isinstance(ref, str) and ref.startswith("$")
        else:
            ok = (isinstance(ref, list) and len(ref) == 2 and isinstance(ref[0], str)
                  and isinstance(ref[1], dict))
        if not ok:
            raise PduFormatError(f"{name} holds a malformed event reference")


def parse_pdu(raw: Any, rv: RoomVersion) -> tuple[Event, bool]:
    """(event, hash_ok). The event is the redacted form when the content hash fails;
    `unsigned` as sent is dropped (it is not covered by anything)."""
    if not isinstance(raw, dict):
        raise PduFormatError("a PDU must be an object")
    pdu = {k: v for k, v in raw.items() if k != "unsigned"}
    try:
        auth_rules.check_pdu_limits(pdu, rv)
    except auth_rules.AuthError as e:
        raise PduFormatError(str(e)) from None
    if not isinstance(pdu.get("content"), dict):
        raise PduFormatError("content must be an object")
    for name in ("depth", "origin_server_ts"):
        value = pdu.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_DEPTH:
            raise PduFormatError(f"{name} must be a non-negative integer")
    if "state_key" in pdu and not isinstance(pdu["state_key"], str):
        raise PduFormatError("state_key must be a string")
    _references(pdu.get("prev_events"), rv, "prev_events", MAX_PREV_EVENTS)
    _references(pdu.get("auth_events"), rv, "auth_events", MAX_AUTH_EVENTS)
    if not isinstance(pdu.get("signatures"), dict) or not isinstance(pdu.get("hashes"), dict):
        raise PduFormatError("a PDU must carry hashes and signatures")
    hash_ok = check_content_hash(pdu)
    if not hash_ok:
        pdu = prune_event_dict(pdu, rv)
    try:
        event_id = compute_event_id(pdu, rv)
    except (ValueError, CanonicalJsonError) as e:
        raise PduFormatError(f"cannot compute the event id: {e}") from None
    return Event(event_id, rv, pdu), hash_ok


def room_id_of(raw: Any) -> str | None:
    """The room a raw PDU claims (v12 create events name none: their id is the room's)."""
    if isinstance(raw, dict) and isinstance(raw.get("room_id"), str):
        return raw["room_id"]
    return None
