"""Grammar of Matrix identifiers (the spec's appendix) and their construction."""
from __future__ import annotations

import re
import secrets
import string

LOCALPART_RE = re.compile(r"\A[a-z0-9._=\-/+]+\Z")  # \Z: "$" would let a trailing newline in
# Historical user ids may use any printable ASCII but ':'; we accept them from others.
HISTORICAL_LOCALPART_RE = re.compile(r"\A[\x21-\x39\x3b-\x7e]+\Z")


def split_id(identifier: str, sigil: str) -> tuple[str, str] | None:
    if not identifier.startswith(sigil) or ":" not in identifier:
        return None
    local, _, domain = identifier[1:].partition(":")
    if not domain:
        return None
    return local, domain


def is_valid_user_id(user_id: str) -> bool:
    parts = split_id(user_id, "@")
    return bool(parts) and len(user_id.encode()) <= 255 and bool(
        HISTORICAL_LOCALPART_RE.match(parts[0]))


def is_valid_room_alias(alias: str) -> bool:
    parts = split_id(alias, "#")
    return bool(parts) and bool(parts[0]) and len(alias.encode()) <= 255 and not any(
        c in parts[0] for c in ": \x00")


def is_valid_room_id(room_id: str) -> bool:
    return room_id.startswith("!") and 1 < len(room_id.encode()) <= 255


def random_string(length: int) -> str:
    alphabet = string.ascii_letters
    return "".join(secrets.choice(alphabet) for _ in range(length))


def new_legacy_event_id(server_name: str) -> str:
    """An event id for room versions 1 and 2, which let the sending server choose it."""
    return f"${random_string(24)}:{server_name}"


def new_device_id() -> str:
    return "".join(secrets.choice(string.ascii_uppercase) for _ in range(10))
