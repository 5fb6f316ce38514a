"""Content hashes, reference hashes, event ids and signatures of room events, in every
room version's event format."""
from __future__ import annotations

import hashlib
from typing import Any

from signedjson.key import SigningKey, VerifyKey
from signedjson.sign import SignatureVerifyException, sign_json, verify_signed_json

from homeserver.canonical_json import (
    decode_unpadded_b64,
    encode_canonical_json,
    unpadded_b64,
    unpadded_urlsafe_b64,
)
from homeserver.event import Event
from homeserver.redaction import prune_event_dict
from homeserver.room_versions import RoomVersion


def compute_content_hash(pdu: dict[str, Any]) -> bytes:
    stripped = {k: v for k, v in pdu.items() if k not in ("unsigned", "signatures", "hashes")}
    return hashlib.sha256(encode_canonical_json(stripped)).digest()


def add_content_hash(pdu: dict[str, Any]) -> None:
    pdu["hashes"] = {"sha256": unpadded_b64(compute_content_hash(pdu))}


def check_content_hash(pdu: dict[str, Any]) -> bool:
    hashes = pdu.get("hashes")
    if not isinstance(hashes, dict) or not isinstance(hashes.get("sha256"), str):
        return False
    try:
        expected = decode_unpadded_b64(hashes["sha256"])
    except ValueError:
        return False
    return expected == compute_content_hash(pdu)


def compute_reference_hash(pdu: dict[str, Any], rv: RoomVersion) -> bytes:
    pruned = prune_event_dict(pdu, rv)
    pruned.pop("signatures", None)
    pruned.pop("unsigned", None)
    return hashlib.sha256(encode_canonical_json(pruned)).digest()


def compute_event_id(pdu: dict[str, Any], rv: RoomVersion) -> str:
    """The event's id: since v3 its reference hash (v3 in standard, v4+ in URL-safe
    unpadded base64); in v1/v2 the id the PDU carries, chosen by its sender."""
    if not rv.event_ids_are_hashes:
        event_id = pdu.get("event_id")
        if not isinstance(event_id, str):
            raise ValueError("a v1/v2 PDU must carry its event_id")
        return event_id
    ref = compute_reference_hash(pdu, rv)
    return "$" + (unpadded_urlsafe_b64(ref) if rv.urlsafe_event_ids else unpadded_b64(ref))


def event_reference(event: Event) -> str | list[Any]:
    """How another event's prev_events/auth_events name `event`: its id since v3; in
    v1/v2 an [id, {"sha256": reference hash}] pair. The hash is computed once per event."""
    rv = event.room_version
    if rv.event_ids_are_hashes:
        return event.event_id
    ref = event.internal.get("reference_hash")
    if ref is None:
        ref = event.internal["reference_hash"] = unpadded_b64(compute_reference_hash(event.pdu, rv))
    return [event.event_id, {"sha256": ref}]


def sign_event(pdu: dict[str, Any], rv: RoomVersion, server_name: str, key: SigningKey) -> None:
    """Sign the redacted form (as the spec requires) and attach the signature to `pdu`."""
    pruned = prune_event_dict(pdu, rv)
    pruned.pop("unsigned", None)
    pruned.pop("signatures", None)
    signed = sign_json(pruned, server_name, key)
    pdu.setdefault("signatures", {}).setdefault(server_name, {}).update(
        signed["signatures"][server_name]
    )


def verify_event_signature(
    pdu: dict[str, Any], rv: RoomVersion, server_name: str, verify_key: VerifyKey
) -> bool:
    pruned = prune_event_dict(pdu, rv)
    pruned.pop("unsigned", None)
    try:
        verify_signed_json(pruned, server_name, verify_key)
    except SignatureVerifyException:
        return False
    return True
