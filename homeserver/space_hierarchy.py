"""The space hierarchy (GET /rooms/{roomId}/hierarchy): a depth-first walk from a space
through its `m.space.child` events, listing each room the asker may preview with the
spec's summary fields and, for spaces, the child events that lead on.

A room may be previewed by a user of its own tenant who is joined or invited, or when
it is public, knockable, world-readable, or restricted to a room the user is in; a user
banned from a room never sees it. Another tenant's rooms and rooms this server does not
know (remote ones: there is no federation yet) are left out as if absent, and a root the
asker may not preview answers 403 M_FORBIDDEN exactly like a root that does not exist.

Pagination is stateless: `next_batch` says how many visible rooms the walk has passed
(and pins `suggested_only` and `max_depth`); the next page walks again and skips them.
The walk is bounded by MAX_DEPTH levels and MAX_ROOMS_WALKED rooms per request."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from homeserver.errors import MatrixError, forbidden
from homeserver.event import Event
from homeserver.ids import is_valid_room_id
from homeserver.join_rules import KNOCK_RULES, RESTRICTED_RULES, allowed_room_ids, in_allowed_room, join_rule
from homeserver.room_heads import RoomHead
from homeserver.tenancy import room_tenant
from storage.directory import directory_chunk

if TYPE_CHECKING:
    from homeserver.server import HomeServer

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
MAX_DEPTH = 10
MAX_ROOMS_WALKED = 2000
MAX_ORDER_LENGTH = 50
_ORDER_RE = re.compile(r"[\x20-\x7e]+")
_TOKEN_RE = re.compile(r"(\d{1,9})_([01])_(\d{1,9}|-)")


@dataclass(frozen=True)
class HierarchyQuery:
    suggested_only: bool = False
    max_depth: int | None = None  # as asked; None: MAX_DEPTH
    limit: int = DEFAULT_LIMIT
    offset: int = 0

    def token(self, offset: int) -> str:
        depth = "-" if self.max_depth is None else str(self.max_depth)
        return f"{offset}_{int(self.suggested_only)}_{depth}"

    def continue_from(self, token: str) -> "HierarchyQuery":
        """The query for the page `token` starts; the spec forbids changing the filters."""
        m = _TOKEN_RE.fullmatch(token)
        if m is None:
            raise MatrixError(400, "M_INVALID_PARAM", "unknown pagination token")
        if self.token(int(m.group(1))) != token:
            raise MatrixError(400, "M_INVALID_PARAM",
                              "suggested_only and max_depth cannot change on paginated requests")
        return HierarchyQuery(self.suggested_only, self.max_depth, self.limit, int(m.group(1)))


def _is_world_readable(head: RoomHead) -> bool:
    ev = head.state.get(("m.room.history_visibility", ""))
    return ev is not None and ev.content.get("history_visibility") == "world_readable"


async def may_preview(hs: "HomeServer", head: RoomHead, user_id: str, tenant: str | None) -> bool:
    if room_tenant(head) != tenant:
        return False
    membership = head.membership_of(user_id)
    if membership == "ban":
        return False
    if membership in ("join", "invite"):
        return True
    rule = join_rule(head)
    if rule == "public" or rule in KNOCK_RULES or _is_world_readable(head):
        return True
    return rule in RESTRICTED_RULES and await in_allowed_room(hs, head, user_id)


def _valid_via(content: dict[str, Any]) -> bool:
    via = content.get("via")
    return isinstance(via, list) and bool(via) and all(isinstance(s, str) for s in via)


def _order_key(ev: Event) -> tuple:
    """The spec's ordering: valid `order` values first (by code point), then by the child
    event's timestamp, then by room id."""
    order = ev.content.get("order")
    if isinstance(order, str) and len(order) <= MAX_ORDER_LENGTH and _ORDER_RE.fullmatch(order):
        return (0, order, ev.origin_server_ts, ev.state_key)
    return (1, "", ev.origin_server_ts, ev.state_key)


def space_children(head: RoomHead, suggested_only: bool) -> list[Event]:
    """The space's child events in the spec's order; a non-space has none."""
    create = head.state.get(("m.room.create", ""))
    if create is None or create.content.get("type") != "m.space":
        return []
    children = [ev for (etype, child), ev in head.state.items()
                if etype == "m.space.child" and is_valid_room_id(child) and "\x00" not in child
                and _valid_via(ev.content)
                and (not suggested_only or ev.content.get("suggested") is True)]
    return sorted(children, key=_order_key)


def room_summary(head: RoomHead, children: list[Event]) -> dict[str, Any]:
    state = {etype: ev.content for (etype, key), ev in head.state.items() if key == ""}
    entry = directory_chunk(head.room_id, len(head.joined_members()), state)
    entry["room_version"] = head.room_version.identifier
    algorithm = state.get("m.room.encryption", {}).get("algorithm")
    if isinstance(algorithm, str):
        entry["encryption"] = algorithm
    allowed = allowed_room_ids(head)
    if allowed:
        entry["allowed_room_ids"] = allowed
    entry["children_state"] = [
        {"type": ev.type, "state_key": ev.state_key, "content": ev.content, "sender": ev.sender,
         "origin_server_ts": ev.origin_server_ts} for ev in children]
    return entry


async def hierarchy(hs: "HomeServer", user_id: str, room_id: str, query: HierarchyQuery) -> dict[str, Any]:
    tenant = await hs.tenancy.tenant_of(user_id)
    root = await hs.room_heads.get(room_id) if is_valid_room_id(room_id) and "\x00" not in room_id else None
    if root is None or not await may_preview(hs, root, user_id, tenant):
        raise forbidden("you are not allowed to view this room")
    depth_limit = min(MAX_DEPTH if query.max_depth is None else query.max_depth, MAX_DEPTH)
    stack: list[tuple[str, int]] = [(room_id, 0)]
    seen: set[str] = set()
    rooms: list[dict[str, Any]] = []
    position = 0  # visible rooms passed so far
    result: dict[str, Any] = {"rooms": rooms}
    while stack and len(seen) < MAX_ROOMS_WALKED:
        current, depth = stack.pop()
        if current in seen:
            continue  # loops and rooms reached twice are listed once
        seen.add(current)
        head = root if current == room_id else await hs.room_heads.get(current)
        if head is None or not await may_preview(hs, head, user_id, tenant):
            continue
        if position == query.offset + query.limit:
            result["next_batch"] = query.token(position)  # one more visible room: another page
            break
        children = space_children(head, query.suggested_only)
        if position >= query.offset:
            rooms.append(room_summary(head, children))
        position += 1
        if depth < depth_limit:
            stack.extend((ev.state_key, depth + 1) for ev in reversed(children))
    return result
