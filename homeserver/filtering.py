"""Event filters (the spec's Filter / RoomFilter / RoomEventFilter), parsed from JSON once
and applied in memory; the SQL side takes the same lists (storage.events.FilterLists)."""
from __future__ import annotations

import fnmatch
import functools
from dataclasses import dataclass, field
from typing import Any

from homeserver.errors import MatrixError


def _str_list(obj: dict, key: str, where: str) -> list[str] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MatrixError(400, "M_INVALID_PARAM", f"{where}.{key} must be a list of strings")
    return value


def _type_matches(patterns: list[str], event_type: str) -> bool:
    # Types may end in '*' as a wildcard; a lone '*' (a common "none of these") is decided
    # without fnmatch, which is slow on the per-response path.
    return any(p == event_type or p == "*" or ("*" in p and fnmatch.fnmatchcase(event_type, p))
               for p in patterns)


@dataclass
class EventFilter:
    limit: int | None = None
    types: list[str] | None = None
    not_types: list[str] = field(default_factory=list)
    senders: list[str] | None = None
    not_senders: list[str] = field(default_factory=list)
    rooms: list[str] | None = None
    not_rooms: list[str] = field(default_factory=list)
    lazy_load_members: bool = False
    include_redundant_members: bool = False
    contains_url: bool | None = None
    unread_thread_notifications: bool = False
    _types_allowed: dict[str, bool] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, obj: Any, where: str = "filter") -> "EventFilter":
        if obj is None:
            return cls()
        if not isinstance(obj, dict):
            raise MatrixError(400, "M_INVALID_PARAM", f"{where} must be an object")
        limit = obj.get("limit")
        if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
            raise MatrixError(400, "M_INVALID_PARAM", f"{where}.limit must be a non-negative integer")
        contains_url = obj.get("contains_url")
        return cls(
            limit=limit,
            types=_str_list(obj, "types", where),
            not_types=_str_list(obj, "not_types", where) or [],
            senders=_str_list(obj, "senders", where),
            not_senders=_str_list(obj, "not_senders", where) or [],
            rooms=_str_list(obj, "rooms", where),
            not_rooms=_str_list(obj, "not_rooms", where) or [],
            lazy_load_members=obj.get("lazy_load_members") is True,
            include_redundant_members=obj.get("include_redundant_members") is True,
            contains_url=contains_url if isinstance(contains_url, bool) else None,
            unread_thread_notifications=obj.get("unread_thread_notifications") is True,
        )

    def allows_room(self, room_id: str) -> bool:
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms

    @functools.cached_property
    def passes_all(self) -> bool:
        """No type, sender or url condition: every event passes (callers skip the checks).
        Filters are not changed once parsed, so this is worked out once."""
        return (self.types is None and not self.not_types and self.senders is None
                and not self.not_senders and self.contains_url is None)

    def allows_type(self, event_type: str) -> bool:
        """Whether events of this type can pass at all (whatever their sender). Remembered
        per filter: a parsed filter is reused by every /sync of its client."""
        known = self._types_allowed.get(event_type)
        if known is None:
            known = not _type_matches(self.not_types, event_type) and (
                self.types is None or _type_matches(self.types, event_type))
            self._types_allowed[event_type] = known
        return known

    def allows(self, event_type: str, sender: str, content: dict | None = None) -> bool:
        if not self.allows_type(event_type) or sender in self.not_senders:
            return False
        if self.senders is not None and sender not in self.senders:
            return False
        if self.contains_url is not None and content is not None:
            if ("url" in content) != self.contains_url:
                return False
        return True

    def sql_lists(self) -> tuple[list[str] | None, list[str] | None, list[str] | None, list[str] | None]:
        """Exact-match lists the database can apply; wildcard types are left to `allows`."""
        exact = lambda xs: [x for x in xs if "*" not in x]  # noqa: E731
        types = None if self.types is None or any("*" in t for t in self.types) else self.types
        return types, exact(self.not_types) or None, self.senders, self.not_senders or None


@dataclass
class RoomFilter:
    rooms: list[str] | None = None
    not_rooms: list[str] = field(default_factory=list)
    include_leave: bool = False
    timeline: EventFilter = field(default_factory=EventFilter)
    state: EventFilter = field(default_factory=EventFilter)
    ephemeral: EventFilter = field(default_factory=EventFilter)
    account_data: EventFilter = field(default_factory=EventFilter)

    def allows_room(self, room_id: str) -> bool:
        if room_id in self.not_rooms:
            return False
        return self.rooms is None or room_id in self.rooms


@dataclass
class Filter:
    room: RoomFilter = field(default_factory=RoomFilter)
    presence: EventFilter = field(default_factory=EventFilter)
    account_data: EventFilter = field(default_factory=EventFilter)
    event_fields: list[str] | None = None
    event_format: str = "client"

    @classmethod
    def parse(cls, obj: Any) -> "Filter":
        if obj is None:
            return cls()
        if not isinstance(obj, dict):
            raise MatrixError(400, "M_INVALID_PARAM", "filter must be a JSON object")
        room = obj.get("room") or {}
        if not isinstance(room, dict):
            raise MatrixError(400, "M_INVALID_PARAM", "filter.room must be an object")
        event_format = obj.get("event_format", "client")
        if event_format not in ("client", "federation"):
            raise MatrixError(400, "M_INVALID_PARAM", "event_format must be client or federation")
        return cls(
            room=RoomFilter(
                rooms=_str_list(room, "rooms", "filter.room"),
                not_rooms=_str_list(room, "not_rooms", "filter.room") or [],
                include_leave=room.get("include_leave") is True,
                timeline=EventFilter.parse(room.get("timeline"), "filter.room.timeline"),
                state=EventFilter.parse(room.get("state"), "filter.room.state"),
                ephemeral=EventFilter.parse(room.get("ephemeral"), "filter.room.ephemeral"),
                account_data=EventFilter.parse(room.get("account_data"), "filter.room.account_data"),
            ),
            presence=EventFilter.parse(obj.get("presence"), "filter.presence"),
            account_data=EventFilter.parse(obj.get("account_data"), "filter.account_data"),
            event_fields=_str_list(obj, "event_fields", "filter"),
            event_format=event_format,
        )


def apply_event_fields(event: dict, fields: list[str] | None) -> dict:
    """Keep only the listed (dot-separated, `\\.`-escaped) fields of a serialized event."""
    if not fields:
        return event
    out: dict = {}
    for spec in fields:
        path = [p.replace("\\.", ".") for p in _split_dotted(spec)]
        src: Any = event
        for part in path:
            if not isinstance(src, dict) or part not in src:
                break
            src = src[part]
        else:
            dst = out
            for part in path[:-1]:
                dst = dst.setdefault(part, {})
            dst[path[-1]] = src
    return out


def _split_dotted(spec: str) -> list[str]:
    parts, cur, i = [], "", 0
    while i < len(spec):
        if spec[i] == "\\" and i + 1 < len(spec) and spec[i + 1] == ".":
            cur += "\\."
            i += 2
            continue
        if spec[i] == ".":
            parts.append(cur)
            cur = ""
        else:
            cur += spec[i]
        i += 1
    parts.append(cur)
    return parts
