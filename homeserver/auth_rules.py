"""Event authorisation rules for every room version (1 to 12).

The spec numbers the rules per room version (v1 has an aliases rule that v6
removed, v12 inserts a room-id rule), so comments here name the rule by what it
checks rather than by number; the differences between versions are switches on
`RoomVersion`. Layering:

* `check_pdu_limits` - size and identifier-grammar limits on the wire PDU.
* `check_auth_events_list` - the rules about the *shape* of `auth_events`
  (duplicates, selection algorithm, room ids). Whether an auth event was itself
  rejected is the caller's business: it knows, we only see `Event` objects.
* `check_auth` - every other rule, evaluated against a state map (the current
  state for local events, the auth events for received ones; always with the
  create event present).

Anything that needs server keys (the `join_authorised_via_users_server`
signature) is the caller's job too; the third-party-invite `signed` block is
verified here because its keys live in room state.
"""
from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

import nacl.exceptions
import nacl.signing

from homeserver.canonical_json import MAX_SAFE_INT, CanonicalJsonError, encode_canonical_json
from homeserver.event import Event, StateKey
from homeserver.room_versions import DEFAULT_ROOM_VERSION, KNOWN_ROOM_VERSIONS, RoomVersion

State = Mapping[StateKey, Event]
PowerLevel = int | float  # float only ever as +inf (v12 creators)

CREATE = "m.room.create"
MEMBER = "m.room.member"
POWER_LEVELS = "m.room.power_levels"
JOIN_RULES = "m.room.join_rules"
THIRD_PARTY_INVITE = "m.room.third_party_invite"
REDACTION = "m.room.redaction"
ALIASES = "m.room.aliases"
JOIN_AUTHORISED_VIA = "join_authorised_via_users_server"

CREATE_KEY: StateKey = (CREATE, "")
POWER_LEVELS_KEY: StateKey = (POWER_LEVELS, "")
JOIN_RULES_KEY: StateKey = (JOIN_RULES, "")

MAX_PDU_BYTES = 65536
MAX_ID_BYTES = 255

# Defaults from the spec's "Definitions" (invite 0, others 50) and the
# m.room.power_levels schema.
_NAMED_LEVEL_DEFAULTS: dict[str, int] = {"invite": 0, "kick": 50, "ban": 50, "redact": 50}
_DEFAULT_STATE_LEVEL = 50
_DEFAULT_EVENTS_LEVEL = 0
_DEFAULT_USERS_LEVEL = 0
_CREATOR_LEVEL_WITHOUT_POWER_LEVELS = 100  # v10/v11 only; v12 creators are infinite

_PL_SCALAR_KEYS = (
    "users_default", "events_default", "state_default", "ban", "redact", "kick", "invite",
)
_PL_MAP_KEYS_V6 = ("events", "notifications")  # v1-v5 check only `events`
# v1-v9 accept integer strings as power levels: optional sign, ASCII digits, and
# surrounding whitespace ("+050", " -1 ").
_LEVEL_STRING_RE = re.compile(r"\s*[+-]?[0-9]+\s*", re.ASCII)

# Identifier grammar (appendices). Server names: DNS name / IPv4 (a subset of the
# DNS-name characters) / bracketed IPv6, then an optional port.
_SERVER_NAME_RE = re.compile(r"(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9.\-]{1,255})(?::[0-9]{1,5})?")
# Historical user-id localparts must still be accepted over federation: anything
# but ':' and NUL (surrogates cannot be encoded, so they are out too).
_LOCALPART_RE = re.compile(r"[^:\x00\ud800-\udfff]*")
_ROOM_LOCALPART_RE = re.compile(r"[^:\x00\ud800-\udfff]+")
# v12 room ids are "!" + the create event's id: unpadded URL-safe base64 of a sha256.
_HASHED_ROOM_ID_RE = re.compile(r"![A-Za-z0-9_\-]{43}")


class AuthError(Exception):
    """The event is not allowed; the message names the rule that refused it."""


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------

def _is_int(value: Any) -> bool:
    # bool is an int subclass in Python but not a JSON integer.
    return type(value) is int and -MAX_SAFE_INT <= value <= MAX_SAFE_INT


def parse_level(value: Any, rv: RoomVersion) -> int | None:
    """A power level value as the room version reads it, or None if it is not one.
    v10+: JSON integers only. v1-v9: also integer strings. v1-v5: also finite floats,
    truncated towards zero (those versions do not require canonical JSON)."""
    if _is_int(value):
        return value
    if rv.enforce_int_power_levels or isinstance(value, bool):
        return None
    if type(value) is int:
        return value  # beyond canonical JSON's range, which v1-v9 do not enforce here
    if isinstance(value, str) and _LEVEL_STRING_RE.fullmatch(value):
        return int(value)
    if rv.float_power_levels and isinstance(value, float) and math.isfinite(value):
        return int(value)
    return None


def _level_or(value: Any, rv: RoomVersion, default: int) -> int:
    level = parse_level(value, rv)
    return default if level is None else level


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _content(event: Event) -> dict[str, Any]:
    content = event.pdu.get("content", {})
    if not isinstance(content, dict):
        raise AuthError(f"{event.event_id}: content is not an object")
    return content


def _domain(identifier: str) -> str:
    # The localpart cannot contain ':', so the domain is everything after the first one.
    return identifier.partition(":")[2]


def _byte_len(value: str) -> int:
    return len(value.encode("utf-8"))


def _is_server_name(value: str) -> bool:
    return _SERVER_NAME_RE.fullmatch(value) is not None


def _is_valid_user_id(value: Any) -> bool:
    """User-id grammar as accepted over federation (historical localparts allowed)."""
    if not isinstance(value, str) or not value.startswith("@") or ":" not in value:
        return False
    try:
        if _byte_len(value) > MAX_ID_BYTES:
            return False
    except UnicodeEncodeError:
        return False
    localpart, _, server = value[1:].partition(":")
    return _LOCALPART_RE.fullmatch(localpart) is not None and _is_server_name(server)


def _is_valid_room_id(value: str, rv: RoomVersion) -> bool:
    if rv.room_id_from_create:
        return _HASHED_ROOM_ID_RE.fullmatch(value) is not None
    if not value.startswith("!") or ":" not in value:
        return False
    localpart, _, server = value[1:].partition(":")
    return _ROOM_LOCALPART_RE.fullmatch(localpart) is not None and _is_server_name(server)


def _room_id_of(event: Event) -> str | None:
    try:
        room_id = event.room_id
    except KeyError:
        return None
    return room_id if isinstance(room_id, str) else None


def _membership_of(user_id: str, state: State) -> str | None:
    member = state.get((MEMBER, user_id))
    return member.membership if member is not None else None


def _join_rule(state: State) -> Any:
    event = state.get(JOIN_RULES_KEY)
    if event is None:
        # No join_rules event: behave as an invite-only room, as other servers do;
        # otherwise a joined member could not even update their own profile.
        return "invite"
    return _as_dict(event.pdu.get("content")).get("join_rule")


def _power_levels(state: State) -> tuple[dict[str, Any], RoomVersion] | None:
    """The power levels content, with the room version that reads its values."""
    event = state.get(POWER_LEVELS_KEY)
    if event is None:
        return None
    return _as_dict(event.pdu.get("content")), event.room_version


# --------------------------------------------------------------------------
# Power levels and creators
# --------------------------------------------------------------------------

def room_creators(create_event: Event) -> set[str]:
    """v10: content.creator; v11: the sender; v12: sender + content.additional_creators."""
    rv = create_event.room_version
    content = _as_dict(create_event.pdu.get("content"))
    if not rv.create_sender_is_creator:
        creator = content.get("creator")
        return {creator} if isinstance(creator, str) else set()
    creators = {create_event.sender}
    if rv.privileged_creators:
        extra = content.get("additional_creators")
        if isinstance(extra, list):
            creators.update(u for u in extra if isinstance(u, str))
    return creators


def get_user_power_level(user_id: str, state: State) -> PowerLevel:
    create = state.get(CREATE_KEY)
    creators = room_creators(create) if create is not None else set()
    if create is not None and create.room_version.privileged_creators and user_id in creators:
        return float("inf")
    levels = _power_levels(state)
    if levels is None:
        # No power levels yet: the spec gives the creator 100 and everyone else 0.
        return _CREATOR_LEVEL_WITHOUT_POWER_LEVELS if user_id in creators else _DEFAULT_USERS_LEVEL
    content, rv = levels
    user_level = parse_level(_as_dict(content.get("users")).get(user_id), rv)
    if user_level is not None:
        return user_level
    # Accepted power levels passed their version's value rules; anything else falls
    # back to the defaults.
    return _level_or(content.get("users_default"), rv, _DEFAULT_USERS_LEVEL)


def get_required_level(event_type: str, is_state: bool, state: State) -> int:
    content, rv = _power_levels(state) or ({}, DEFAULT_ROOM_VERSION)
    level = parse_level(_as_dict(content.get("events")).get(event_type), rv)
    if level is not None:
        return level
    if is_state:
        return _level_or(content.get("state_default"), rv, _DEFAULT_STATE_LEVEL)
    return _level_or(content.get("events_default"), rv, _DEFAULT_EVENTS_LEVEL)


def get_named_level(name: str, state: State) -> int:
    if name not in _NAMED_LEVEL_DEFAULTS:
        raise ValueError(f"unknown named power level {name!r}")
    content, rv = _power_levels(state) or ({}, DEFAULT_ROOM_VERSION)
    return _level_or(content.get(name), rv, _NAMED_LEVEL_DEFAULTS[name])


# --------------------------------------------------------------------------
# Auth events selection and the rules about the auth_events list
# --------------------------------------------------------------------------

def _third_party_token(content: Mapping[str, Any]) -> str | None:
    signed = _as_dict(_as_dict(content.get("third_party_invite")).get("signed"))
    token = signed.get("token")
    return token if isinstance(token, str) else None


def _member_auth_types(
    state_key: str | None, content: Mapping[str, Any], rv: RoomVersion,
) -> list[StateKey]:
    types: list[StateKey] = []
    membership = content.get("membership")
    if isinstance(state_key, str):
        types.append((MEMBER, state_key))
    if membership in ("join", "invite", "knock"):
        types.append(JOIN_RULES_KEY)
    if membership == "invite":
        token = _third_party_token(content)
        if token is not None:
            types.append((THIRD_PARTY_INVITE, token))
    if membership == "join" and rv.restricted_join_rule:
        via = content.get(JOIN_AUTHORISED_VIA)
        if isinstance(via, str):
            types.append((MEMBER, via))
    return types


def auth_types_for_event(
    event_type: str,
    sender: str,
    state_key: str | None,
    content: dict,
    rv: RoomVersion,
) -> list[tuple[str, str]]:
    """The (type, state_key) pairs of room state an event must cite as auth events."""
    if event_type == CREATE:
        return []  # the create event is the root: it has no auth events
    types: list[StateKey] = []
    if not rv.room_id_from_create:
        types.append(CREATE_KEY)  # v12 implies the create event via the room id instead
    types.append(POWER_LEVELS_KEY)
    types.append((MEMBER, sender))
    if event_type == MEMBER:
        types.extend(_member_auth_types(state_key, _as_dict(content), rv))
    return list(dict.fromkeys(types))  # drop repeats (e.g. sender == target), keep order


def _auth_event_key(auth_event: Event) -> StateKey:
    event_type, state_key = auth_event.pdu.get("type"), auth_event.pdu.get("state_key")
    if not isinstance(event_type, str) or not isinstance(state_key, str):
        raise AuthError(f"auth event {auth_event.event_id} is not a state event")
    return (event_type, state_key)


def check_auth_events_list(event: Event, auth_events: list[Event]) -> None:
    """Rules on the auth_events list itself (not whether its members were rejected)."""
    if event.type == CREATE:
        return  # the create rules allow or reject before auth events are considered
    rv = event.room_version
    allowed = set(auth_types_for_event(
        event.type, event.sender, event.state_key, _content(event), rv))
    room_id = _room_id_of(event)
    seen: set[StateKey] = set()
    for auth_event in auth_events:
        key = _auth_event_key(auth_event)
        if key in seen:
            raise AuthError(f"duplicate auth event for {key}")
        seen.add(key)
        if key not in allowed:
            raise AuthError(f"auth event {key} is not selected by the auth events selection")
        if _room_id_of(auth_event) != room_id:
            raise AuthError(f"auth event {auth_event.event_id} belongs to a different room")
    if not rv.room_id_from_create and CREATE_KEY not in seen:
        raise AuthError("no m.room.create event among the auth events")


# --------------------------------------------------------------------------
# m.room.create
# --------------------------------------------------------------------------

def _check_additional_creators(content: Mapping[str, Any]) -> None:
    if "additional_creators" not in content:
        return
    extra = content["additional_creators"]
    if not isinstance(extra, list) or not all(_is_valid_user_id(u) for u in extra):
        raise AuthError("additional_creators is not a list of valid user ids")


def _check_create(event: Event) -> None:
    rv = event.room_version
    content = _content(event)
    if event.pdu.get("state_key") != "":
        raise AuthError("m.room.create must have an empty state_key")
    if event.pdu.get("prev_events"):
        raise AuthError("m.room.create must not have prev_events")
    if rv.room_id_from_create:
        if "room_id" in event.pdu:
            raise AuthError("m.room.create must not have a room_id in this room version")
    else:
        room_id = event.pdu.get("room_id")
        if not isinstance(room_id, str) or _domain(room_id) != _domain(event.sender):
            raise AuthError("m.room.create room_id domain does not match the sender's")
    if "room_version" in content:
        version = content["room_version"]
        if not isinstance(version, str) or version not in KNOWN_ROOM_VERSIONS:
            raise AuthError(f"m.room.create has an unrecognised room_version {version!r}")
    if rv.privileged_creators:
        _check_additional_creators(content)
    if not rv.create_sender_is_creator and "creator" not in content:
        raise AuthError("m.room.create content has no creator")


def _require_create(event: Event, state: State) -> Event:
    """The create event of the state, checked against the event's room id."""
    create = state.get(CREATE_KEY)
    if create is None or create.type != CREATE:
        raise AuthError("no m.room.create event in the room state")
    if create.rejected:
        raise AuthError("the room's m.room.create event was rejected")
    # v12: the room id must be the create event's id with a '!' sigil (Event.room_id
    # derives it). Earlier versions: the create event must simply be of this room.
    if _room_id_of(create) != _room_id_of(event):
        raise AuthError("room_id does not match the room's m.room.create event")
    return create


def _check_federate(event: Event, create: Event) -> None:
    # The spec says "set to false": only a literal JSON false disables federation.
    if _as_dict(create.pdu.get("content")).get("m.federate") is False:
        if _domain(event.sender) != _domain(create.sender):
            raise AuthError("room is not federated and the sender is on another server")


# --------------------------------------------------------------------------
# m.room.member
# --------------------------------------------------------------------------

def _is_creator_first_join(event: Event, create: Event) -> bool:
    """The creator's own join, straight after the create event."""
    if event.prev_event_ids != [create.event_id]:
        return False
    if create.room_version.create_sender_is_creator:
        creator = create.sender  # v11+: the sender, never additional_creators
    else:
        creator = _as_dict(create.pdu.get("content")).get("creator")
    return event.state_key == creator


def _check_join_authoriser(event: Event, state: State) -> None:
    # That the authoriser's server signed the event is checked by the caller.
    via = _content(event).get(JOIN_AUTHORISED_VIA)
    if not isinstance(via, str):
        raise AuthError("restricted room: join is not authorised via a member's server")
    if _membership_of(via, state) != "join":
        raise AuthError("restricted room: the authorising user is not joined")
    if get_user_power_level(via, state) < get_named_level("invite", state):
        raise AuthError("restricted room: the authorising user cannot invite")


def _invite_only_rules(rv: RoomVersion) -> tuple[str, ...]:
    """Join rules under which an invite (or being joined already) lets a user join."""
    return ("invite", "knock") if rv.knock_join_rule else ("invite",)


def _restricted_rules(rv: RoomVersion) -> tuple[str, ...]:
    """Join rules under which a joined member with the invite level may vouch for a join."""
    rules = ("restricted",) if rv.restricted_join_rule else ()
    return rules + ("knock_restricted",) if rv.knock_restricted_join_rule else rules


def _knock_rules(rv: RoomVersion) -> tuple[str, ...]:
    if not rv.knock_join_rule:
        return ()
    return ("knock", "knock_restricted") if rv.knock_restricted_join_rule else ("knock",)


def _check_join(event: Event, state: State, create: Event) -> None:
    if _is_creator_first_join(event, create):
        return
    if event.sender != event.state_key:
        raise AuthError("only the user themselves can join")
    current = _membership_of(event.sender, state)
    if current == "ban":
        raise AuthError("sender is banned")
    rv = event.room_version
    rule = _join_rule(state)
    if rule in _invite_only_rules(rv):
        if current in ("invite", "join"):
            return
        raise AuthError(f"join rule is {rule} and the user is not invited")
    if rule in _restricted_rules(rv):
        if current in ("invite", "join"):
            return
        _check_join_authoriser(event, state)
        return
    if rule == "public":
        return
    raise AuthError(f"join rule {rule!r} does not allow joining in room version {rv.identifier}")


def _decode_unpadded_base64(value: str) -> bytes | None:
    # Identity servers publish keys in either the standard or the URL-safe alphabet.
    normalised = value.strip().rstrip("=").replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(normalised + "=" * (-len(normalised) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _third_party_public_keys(content: Mapping[str, Any]) -> list[bytes]:
    encoded: list[Any] = [content.get("public_key")]
    public_keys = content.get("public_keys")
    if isinstance(public_keys, list):
        encoded.extend(_as_dict(entry).get("public_key") for entry in public_keys)
    decoded = [_decode_unpadded_base64(k) for k in encoded if isinstance(k, str)]
    return [k for k in decoded if k is not None]


def _signature_matches(message: bytes, signature: Any, keys: list[bytes]) -> bool:
    if not isinstance(signature, str):
        return False
    raw = _decode_unpadded_base64(signature)
    if raw is None:
        return False
    for key in keys:
        try:
            nacl.signing.VerifyKey(key).verify(message, raw)
            return True
        except (nacl.exceptions.BadSignatureError, ValueError, TypeError):
            continue
    return False


def _signed_block_verifies(signed: Mapping[str, Any], invite_event: Event) -> bool:
    """Does any signature of `signed` verify with any key of the third-party invite?"""
    keys = _third_party_public_keys(_as_dict(invite_event.pdu.get("content")))
    signatures = signed.get("signatures")
    if not keys or not isinstance(signatures, dict):
        return False
    body = {k: v for k, v in signed.items() if k not in ("signatures", "unsigned")}
    try:
        message = encode_canonical_json(body)
    except (CanonicalJsonError, UnicodeEncodeError):
        return False
    return any(
        _signature_matches(message, signature, keys)
        for by_server in signatures.values() if isinstance(by_server, dict)
        for signature in by_server.values()
    )


def _check_third_party_invite(event: Event, state: State) -> None:
    target = event.state_key
    if _membership_of(target, state) == "ban":
        raise AuthError("third-party invite target is banned")
    signed = _as_dict(_content(event).get("third_party_invite")).get("signed")
    if not isinstance(signed, dict):
        raise AuthError("third_party_invite has no signed block")
    mxid, token = signed.get("mxid"), signed.get("token")
    if not isinstance(mxid, str) or not isinstance(token, str):
        raise AuthError("third_party_invite signed block lacks mxid or token")
    if mxid != target:
        raise AuthError("third_party_invite mxid does not match the state_key")
    invite_event = state.get((THIRD_PARTY_INVITE, token))
    if invite_event is None:
        raise AuthError("no m.room.third_party_invite event for the token")
    if invite_event.sender != event.sender:
        raise AuthError("sender did not send the m.room.third_party_invite")
    if not _signed_block_verifies(signed, invite_event):
        raise AuthError("third_party_invite signed block has no valid signature")


def _check_invite(event: Event, state: State, create: Event) -> None:
    if "third_party_invite" in _content(event):
        _check_third_party_invite(event, state)
        return
    if _membership_of(event.sender, state) != "join":
        raise AuthError("inviter is not joined")
    if _membership_of(event.state_key, state) in ("join", "ban"):
        raise AuthError("invitee is already joined or is banned")
    if get_user_power_level(event.sender, state) < get_named_level("invite", state):
        raise AuthError("inviter is below the invite level")


def _check_leave(event: Event, state: State, create: Event) -> None:
    sender_membership = _membership_of(event.sender, state)
    if event.sender == event.state_key:
        # v7+ also lets a knocking user withdraw the knock.
        leavable = ("invite", "join", "knock") if event.room_version.knock_join_rule else (
            "invite", "join")
        if sender_membership in leavable:
            return
        raise AuthError(f"can only leave when {' or '.join(leavable)}")
    if sender_membership != "join":
        raise AuthError("kicker is not joined")
    sender_level = get_user_power_level(event.sender, state)
    target_level = get_user_power_level(event.state_key, state)
    if _membership_of(event.state_key, state) == "ban":
        if sender_level < get_named_level("ban", state):
            raise AuthError("unbanning needs the ban level")
    if sender_level >= get_named_level("kick", state) and target_level < sender_level:
        return
    raise AuthError("kicker is below the kick level or not above the target")


def _check_ban(event: Event, state: State, create: Event) -> None:
    if _membership_of(event.sender, state) != "join":
        raise AuthError("banner is not joined")
    sender_level = get_user_power_level(event.sender, state)
    target_level = get_user_power_level(event.state_key, state)
    if sender_level >= get_named_level("ban", state) and target_level < sender_level:
        return
    raise AuthError("banner is below the ban level or not above the target")


def _check_knock(event: Event, state: State, create: Event) -> None:
    rv = event.room_version
    if not rv.knock_join_rule:
        raise AuthError(f"unknown membership 'knock' in room version {rv.identifier}")
    if _join_rule(state) not in _knock_rules(rv):
        raise AuthError("join rule does not allow knocking")
    if event.sender != event.state_key:
        raise AuthError("only the user themselves can knock")
    if _membership_of(event.sender, state) in ("ban", "invite", "join"):
        raise AuthError("cannot knock when banned, invited or joined")


_MembershipRule = Callable[[Event, State, Event], None]
_MEMBERSHIP_RULES: dict[str, _MembershipRule] = {
    "join": _check_join,
    "invite": _check_invite,
    "leave": _check_leave,
    "ban": _check_ban,
    "knock": _check_knock,
}


def _check_member(event: Event, state: State, create: Event) -> None:
    content = _content(event)
    if not isinstance(event.state_key, str) or "membership" not in content:
        raise AuthError("m.room.member needs a state_key and content.membership")
    membership = content["membership"]
    rule = _MEMBERSHIP_RULES.get(membership) if isinstance(membership, str) else None
    if rule is None:
        raise AuthError(f"unknown membership {membership!r}")
    rule(event, state, create)


# --------------------------------------------------------------------------
# m.room.power_levels
# --------------------------------------------------------------------------

def _map_keys(rv: RoomVersion) -> tuple[str, ...]:
    return _PL_MAP_KEYS_V6 if rv.limit_notifications_power_levels else ("events",)


def _validate_power_levels_content(content: Mapping[str, Any], rv: RoomVersion) -> None:
    if rv.enforce_int_power_levels:
        # v10+: every level is a JSON integer. Earlier versions check only `users`.
        for key in _PL_SCALAR_KEYS:
            if key in content and not _is_int(content[key]):
                raise AuthError(f"power levels {key} is not an integer")
        for key in _PL_MAP_KEYS_V6:
            if key in content:
                value = content[key]
                if not isinstance(value, dict) or not all(_is_int(v) for v in value.values()):
                    raise AuthError(f"power levels {key} is not an object of integers")
    if "users" in content:
        users = content["users"]
        if not isinstance(users, dict):
            raise AuthError("power levels users is not an object")
        for user_id, level in users.items():
            if not _is_valid_user_id(user_id) or parse_level(level, rv) is None:
                raise AuthError(f"power levels users has an invalid entry for {user_id!r}")


def _reject_listed_creators(content: Mapping[str, Any], create: Event) -> None:
    # v12: creators' power is implied by the create event and cannot be set or lowered.
    listed = room_creators(create) & set(_as_dict(content.get("users")))
    if listed:
        raise AuthError(f"power levels must not list room creators: {sorted(listed)}")


def _check_scalar_changes(
    old: Mapping[str, Any], new: Mapping[str, Any], sender_level: PowerLevel, rv: RoomVersion,
) -> None:
    for key in _PL_SCALAR_KEYS:
        _check_level_change(key, old.get(key), new.get(key), sender_level, rv)


def _check_map_changes(
    name: str, old: Mapping[str, Any], new: Mapping[str, Any], sender_level: PowerLevel,
    rv: RoomVersion,
) -> None:
    for key in sorted(old.keys() | new.keys()):
        _check_level_change(f"{name}[{key}]", old.get(key), new.get(key), sender_level, rv)


def _check_level_change(
    label: str, old: Any, new: Any, sender_level: PowerLevel, rv: RoomVersion,
) -> None:
    """A changed level may be neither above the sender's level before nor after."""
    old_value, new_value = parse_level(old, rv), parse_level(new, rv)
    if old_value == new_value:
        return
    if old_value is not None and old_value > sender_level:
        raise AuthError(f"cannot change {label}: its current value is above the sender's level")
    if new_value is not None and new_value > sender_level:
        raise AuthError(f"cannot set {label} above the sender's level")


def _check_user_changes(
    old: Mapping[str, Any], new: Mapping[str, Any], sender: str, sender_level: PowerLevel,
    rv: RoomVersion,
) -> None:
    for user_id in sorted(old.keys() | new.keys()):
        old_value, new_value = parse_level(old.get(user_id), rv), parse_level(new.get(user_id), rv)
        if old_value == new_value:
            continue
        # Peers (and anyone above) cannot be changed; the sender may lower themselves.
        if user_id != sender and old_value is not None and old_value >= sender_level:
            raise AuthError(f"cannot change the level of {user_id}: not below the sender")
        if new_value is not None and new_value > sender_level:
            raise AuthError(f"cannot raise {user_id} above the sender's level")


def _check_power_levels(event: Event, state: State, create: Event) -> None:
    rv = event.room_version
    new = _content(event)
    _validate_power_levels_content(new, rv)
    if rv.privileged_creators:
        _reject_listed_creators(new, create)
    previous = state.get(POWER_LEVELS_KEY)
    if previous is None:
        return  # the room's first power levels: nothing to compare against
    old = _as_dict(previous.pdu.get("content"))
    sender_level = get_user_power_level(event.sender, state)
    _check_scalar_changes(old, new, sender_level, rv)
    for key in _map_keys(rv):
        _check_map_changes(key, _as_dict(old.get(key)), _as_dict(new.get(key)), sender_level, rv)
    _check_user_changes(
        _as_dict(old.get("users")), _as_dict(new.get("users")), event.sender, sender_level, rv)


# --------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------

def _check_non_member(event: Event, state: State, create: Event) -> None:
    sender_level = get_user_power_level(event.sender, state)
    if event.type == THIRD_PARTY_INVITE:
        if sender_level < get_named_level("invite", state):
            raise AuthError("sender is below the invite level")
        return
    if get_required_level(event.type, event.is_state(), state) > sender_level:
        raise AuthError(f"sender's power level is too low to send {event.type}")
    state_key = event.state_key
    if isinstance(state_key, str) and state_key.startswith("@") and state_key != event.sender:
        raise AuthError("state_key names another user")
    if event.type == POWER_LEVELS:
        _check_power_levels(event, state, create)
    if event.type == REDACTION and event.room_version.redaction_auth_rule:
        _check_redaction_v1(event, sender_level, state)
    # m.room.redaction since v3: no redaction-specific auth rule; only the required
    # level above applies. Whether to *apply* a redaction (redact level or same-server
    # sender) is decided later by the redaction handling, not here.


def _check_redaction_v1(event: Event, sender_level: PowerLevel, state: State) -> None:
    """v1/v2: the redact level, or a redaction whose event id has the same server as
    the redacted event's id (v1/v2 event ids name the server that made them)."""
    if sender_level >= get_named_level("redact", state):
        return
    redacts = event.redacts
    if redacts is not None and _domain(redacts) and _domain(redacts) == _domain(event.event_id):
        return
    raise AuthError("redaction needs the redact level or an event from the same server")


def _check_aliases(event: Event) -> None:
    """v1-v5: a server may publish its own aliases (state_key = its name), whoever sends."""
    state_key = event.state_key
    if not state_key:
        raise AuthError("m.room.aliases needs a non-empty state_key")
    if state_key != _domain(event.sender):
        raise AuthError("m.room.aliases state_key is not the sender's server")


def check_auth(event: Event, state: State) -> None:
    """Raise AuthError unless `event` is allowed against `state`."""
    if event.type == CREATE:
        _check_create(event)
        return
    create = _require_create(event, state)
    _check_federate(event, create)
    if event.type == ALIASES and event.room_version.special_case_aliases:
        _check_aliases(event)
        return
    if event.type == MEMBER:
        _check_member(event, state, create)
        return
    if _membership_of(event.sender, state) != "join":
        raise AuthError("sender is not joined to the room")
    _check_non_member(event, state, create)


def _check_id_field(pdu: Mapping[str, Any], field: str) -> None:
    if field not in pdu:
        return
    value = pdu[field]
    if not isinstance(value, str):
        raise AuthError(f"{field} is not a string")
    if _byte_len(value) > MAX_ID_BYTES:
        raise AuthError(f"{field} is longer than {MAX_ID_BYTES} bytes")


def _check_room_id_grammar(pdu: Mapping[str, Any], rv: RoomVersion) -> None:
    if rv.room_id_from_create and pdu.get("type") == CREATE:
        return  # v12 create events carry no room id (check_auth rejects one if present)
    room_id = pdu.get("room_id")
    if not isinstance(room_id, str) or not _is_valid_room_id(room_id, rv):
        raise AuthError(
            f"room_id {room_id!r} is not a valid room id for room version {rv.identifier}")


def check_pdu_limits(pdu: dict, rv: RoomVersion) -> None:
    """Size limits of the whole PDU and of its identifier fields, plus id grammar."""
    if not isinstance(pdu, dict):
        raise AuthError("PDU is not an object")
    try:
        size = len(encode_canonical_json(pdu))
    except (CanonicalJsonError, UnicodeEncodeError, ValueError, TypeError, RecursionError) as e:
        raise AuthError(f"PDU cannot be encoded as canonical JSON: {e}") from e
    if size > MAX_PDU_BYTES:
        raise AuthError(f"PDU is {size} bytes, over the {MAX_PDU_BYTES} byte limit")
    for field in ("sender", "room_id", "state_key", "type", "event_id"):
        _check_id_field(pdu, field)
    if not isinstance(pdu.get("type"), str):
        raise AuthError("PDU has no type")
    if not _is_valid_user_id(pdu.get("sender")):
        raise AuthError(f"sender {pdu.get('sender')!r} is not a valid user id")
    _check_room_id_grammar(pdu, rv)
    if not rv.event_ids_are_hashes:
        _check_legacy_event_id(pdu.get("event_id"))


def _check_legacy_event_id(event_id: Any) -> None:
    """v1/v2 PDUs carry their id, `$opaque:server`."""
    if not isinstance(event_id, str) or not event_id.startswith("$"):
        raise AuthError("a v1/v2 PDU needs an event_id starting with '$'")
    opaque, _, server = event_id[1:].partition(":")
    if not opaque or "\x00" in opaque or not _is_server_name(server):
        raise AuthError(f"event_id {event_id!r} is not of the form $opaque:server")
