"""The sliding sync (MSC4186) request body, checked and turned into frozen values, in the
shape Synapse serves today on the unstable prefix: `lists` with `ranges`, `required_state`
as [type, state_key] pairs, `room_subscriptions`, `extensions`. A malformed body is 400
M_BAD_JSON with the path of the offending field; unknown keys are ignored (newer clients
send fields older servers do not know)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from homeserver.errors import MatrixError

WILDCARD = "*"
LAZY = "$LAZY"
ME = "$ME"
MEMBER = "m.room.member"
MAX_LISTS = 100
MAX_RANGES = 100
MAX_SUBSCRIPTIONS = 1000
MAX_REQUIRED_STATE = 1000
MAX_TIMELINE_LIMIT = 1000
MAX_LIST_KEY = 64


def _bad(path: str, what: str) -> MatrixError:
    return MatrixError(400, "M_BAD_JSON", f"{path}: {what}")


@dataclass(frozen=True)
class RequiredState:
    """What state a room config asks for. Entries are OR'd; ["*", "*"] asks for all."""
    everything: bool = False
    exact: frozenset[tuple[str, str]] = frozenset()   # state keys may be $ME
    any_key: frozenset[str] = frozenset()             # [type, "*"]
    any_type: frozenset[str] = frozenset()            # ["*", state_key]
    lazy: bool = False                                # ["m.room.member", "$LAZY"]

    def union(self, other: "RequiredState") -> "RequiredState":
        return RequiredState(self.everything or other.everything, self.exact | other.exact,
                             self.any_key | other.any_key, self.any_type | other.any_type,
                             self.lazy or other.lazy)

    def covers(self, other: "RequiredState") -> bool:
        """Whether everything `other` asks for is asked for here (structurally: a config
        that grew is sent the state it now asks for)."""
        if self.everything:
            return True
        if other.everything or (other.lazy and not self.lazy):
            return False
        return (other.any_key <= self.any_key and other.any_type <= self.any_type
                and all(t in self.any_key or k in self.any_type or (t, k) in self.exact
                        for t, k in other.exact))

    def matches(self, event_type: str, state_key: str, user_id: str) -> bool:
        if self.everything or event_type in self.any_key:
            return True
        if state_key in self.any_type or (event_type, state_key) in self.exact:
            return True
        return state_key == user_id and ((event_type, ME) in self.exact or ME in self.any_type)

    @property
    def all_members(self) -> bool:
        return self.everything or MEMBER in self.any_key

    def wanted_keys(self, user_id: str) -> list[tuple[str, str]]:
        return [(t, user_id if k == ME else k) for t, k in self.exact]


NO_STATE = RequiredState()


@dataclass(frozen=True)
class RoomConfig:
    timeline_limit: int
    required: RequiredState

    def merge(self, other: "RoomConfig") -> "RoomConfig":
        return RoomConfig(max(self.timeline_limit, other.timeline_limit), self.required.union(other.required))


@dataclass(frozen=True)
class ListFilters:
    is_dm: bool | None = None
    spaces: tuple[str, ...] | None = None
    is_encrypted: bool | None = None
    is_invite: bool | None = None
    room_types: tuple[str | None, ...] | None = None
    not_room_types: tuple[str | None, ...] | None = None
    tags: tuple[str, ...] | None = None
    not_tags: tuple[str, ...] | None = None

    @property
    def needs_head(self) -> bool:
        return self.is_encrypted is not None or self.room_types is not None or self.not_room_types is not None


@dataclass(frozen=True)
class ListRequest:
    ranges: tuple[tuple[int, int], ...] | None  # None: every room of the list
    config: RoomConfig
    filters: ListFilters | None


@dataclass(frozen=True)
class Scope:
    """Which rooms an extension covers: rooms of these lists and these subscriptions
    (None: all of them, the default "*")."""
    lists: frozenset[str] | None = None
    rooms: frozenset[str] | None = None


@dataclass(frozen=True)
class SlidingRequest:
    conn_id: str = ""
    lists: dict[str, ListRequest] = field(default_factory=dict)
    subscriptions: dict[str, RoomConfig] = field(default_factory=dict)
    to_device: bool = False
    to_device_since: int | None = None
    e2ee: bool = False
    account_data: Scope | None = None
    receipts: Scope | None = None
    typing: Scope | None = None


def _obj(value: Any, path: str, optional: bool = True) -> dict | None:
    if value is None and optional:
        return None
    if not isinstance(value, dict):
        raise _bad(path, "must be an object")
    return value


def _bool(value: Any, path: str) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise _bad(path, "must be a boolean")
    return value


def _int(value: Any, path: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _bad(path, f"must be an integer from {low} to {high}")
    return value


def _strings(value: Any, path: str, nullable: bool = False, limit: int = 1000) -> tuple | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > limit or not all(
            isinstance(v, str) or (nullable and v is None) for v in value):
        raise _bad(path, "must be a list of strings" + (" or nulls" if nullable else ""))
    return tuple(value)


def parse_required_state(value: Any, path: str) -> RequiredState:
    if not isinstance(value, list) or len(value) > MAX_REQUIRED_STATE:
        raise _bad(path, f"must be a list of at most {MAX_REQUIRED_STATE} [type, state_key] pairs")
    everything = lazy = False
    exact: set[tuple[str, str]] = set()
    any_key: set[str] = set()
    any_type: set[str] = set()
    for i, pair in enumerate(value):
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
            raise _bad(f"{path}[{i}]", "must be a [type, state_key] pair of strings")
        event_type, state_key = pair
        if event_type == WILDCARD and state_key == WILDCARD:
            everything = True
        elif event_type == MEMBER and state_key == LAZY:
            lazy = True
        elif state_key == WILDCARD:
            any_key.add(event_type)
        elif event_type == WILDCARD:
            any_type.add(state_key)
        else:
            exact.add((event_type, state_key))
    return RequiredState(everything, frozenset(exact), frozenset(any_key), frozenset(any_type), lazy)


def _room_config(value: dict, path: str) -> RoomConfig:
    if "timeline_limit" not in value or "required_state" not in value:
        raise _bad(path, "timeline_limit and required_state are required")
    return RoomConfig(_int(value["timeline_limit"], f"{path}.timeline_limit", 0, MAX_TIMELINE_LIMIT),
                      parse_required_state(value["required_state"], f"{path}.required_state"))


def _filters(value: Any, path: str) -> ListFilters | None:
    f = _obj(value, path)
    if f is None:
        return None
    return ListFilters(
        is_dm=_bool(f.get("is_dm"), f"{path}.is_dm"),
        spaces=_strings(f.get("spaces"), f"{path}.spaces"),
        is_encrypted=_bool(f.get("is_encrypted"), f"{path}.is_encrypted"),
        is_invite=_bool(f.get("is_invite"), f"{path}.is_invite"),
        room_types=_strings(f.get("room_types"), f"{path}.room_types", nullable=True),
        not_room_types=_strings(f.get("not_room_types"), f"{path}.not_room_types", nullable=True),
        tags=_strings(f.get("tags"), f"{path}.tags"),
        not_tags=_strings(f.get("not_tags"), f"{path}.not_tags"),
    )


def _list(value: Any, path: str) -> ListRequest:
    lst = _obj(value, path, optional=False)
    assert lst is not None
    ranges = None
    if _bool(lst.get("slow_get_all_rooms"), f"{path}.slow_get_all_rooms") is not True \
            and lst.get("ranges") is not None:
        raw = lst["ranges"]
        if not isinstance(raw, list) or len(raw) > MAX_RANGES:
            raise _bad(f"{path}.ranges", f"must be a list of at most {MAX_RANGES} [start, end] pairs")
        out = []
        for i, r in enumerate(raw):
            if not (isinstance(r, list) and len(r) == 2):
                raise _bad(f"{path}.ranges[{i}]", "must be a [start, end] pair")
            start = _int(r[0], f"{path}.ranges[{i}][0]", 0, 2**53)
            end = _int(r[1], f"{path}.ranges[{i}][1]", 0, 2**53)
            if start > end:
                raise _bad(f"{path}.ranges[{i}]", "start must not be after end")
            out.append((start, end))
        ranges = tuple(out)
    return ListRequest(ranges, _room_config(lst, path), _filters(lst.get("filters"), f"{path}.filters"))


def _scope(value: Any, path: str) -> Scope | None:
    ext = _obj(value, path)
    if ext is None or _bool(ext.get("enabled"), f"{path}.enabled") is not True:
        return None
    lists = _strings(ext.get("lists", [WILDCARD]), f"{path}.lists")
    rooms = _strings(ext.get("rooms", [WILDCARD]), f"{path}.rooms")
    return Scope(None if lists is None or WILDCARD in lists else frozenset(lists),
                 None if rooms is None or WILDCARD in rooms else frozenset(rooms))


def parse_request(body: dict[str, Any]) -> SlidingRequest:
    conn_id = body.get("conn_id")
    if conn_id is not None and not isinstance(conn_id, str):
        raise _bad("conn_id", "must be a string")
    raw_lists = _obj(body.get("lists"), "lists") or {}
    if len(raw_lists) > MAX_LISTS:
        raise _bad("lists", f"at most {MAX_LISTS} lists")
    lists = {}
    for key, value in raw_lists.items():
        if len(key) > MAX_LIST_KEY:
            raise _bad("lists", f"list keys are at most {MAX_LIST_KEY} characters")
        lists[key] = _list(value, f"lists.{key}")
    raw_subs = _obj(body.get("room_subscriptions"), "room_subscriptions") or {}
    if len(raw_subs) > MAX_SUBSCRIPTIONS:
        raise _bad("room_subscriptions", f"at most {MAX_SUBSCRIPTIONS} subscriptions")
    subscriptions = {}
    for room_id, value in raw_subs.items():
        sub = _obj(value, f"room_subscriptions.{room_id}", optional=False)
        assert sub is not None
        subscriptions[room_id] = _room_config(sub, f"room_subscriptions.{room_id}")
    ext = _obj(body.get("extensions"), "extensions") or {}
    to_device = _obj(ext.get("to_device"), "extensions.to_device") or {}
    since = to_device.get("since")
    if since is not None:
        if not isinstance(since, str) or not since.isascii() or not since.isdigit() or len(since) > 18:
            raise _bad("extensions.to_device.since", "must be a next_batch from an earlier response")
        since = int(since)
    if to_device.get("limit") is not None:
        _int(to_device["limit"], "extensions.to_device.limit", 0, 2**31)
    e2ee = _obj(ext.get("e2ee"), "extensions.e2ee") or {}
    return SlidingRequest(
        conn_id=conn_id or "",
        lists=lists,
        subscriptions=subscriptions,
        to_device=_bool(to_device.get("enabled"), "extensions.to_device.enabled") is True,
        to_device_since=since,
        e2ee=_bool(e2ee.get("enabled"), "extensions.e2ee.enabled") is True,
        account_data=_scope(ext.get("account_data"), "extensions.account_data"),
        receipts=_scope(ext.get("receipts"), "extensions.receipts"),
        typing=_scope(ext.get("typing"), "extensions.typing"),
    )
