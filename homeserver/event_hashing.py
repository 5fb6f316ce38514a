"""Content hashes, reference hashes, event ids and signatures of room events (v3+ formats)."""
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
    return "$" + unpadded_urlsafe_b64(compute_reference_hash(pdu, rv))


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
