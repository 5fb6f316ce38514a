"""History visibility: which events of a room a user may read.

In rooms of this server alone, state at an event is taken from the room's stream order
(the last membership / history visibility change at or before the event), which is exact
because such rooms are linear. In rooms shared with other servers the DAG can fork, and
`visible_events` reads the state at each event (its state group) instead."""
from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from homeserver.errors import forbidden
from homeserver.event import Event
from storage import state as state_store

if TYPE_CHECKING:
    from homeserver.server import HomeServer


OPEN_END = 2**62  # beyond any stream position


def visibility_of(state_json: str) -> str:
    """The history_visibility of an m.room.history_visibility event's JSON."""
    return json.loads(state_json).get("content", {}).get("history_visibility", "shared")


@dataclass
class UserRoomHistory:
    memberships: list[tuple[int, str]]   # (stream, membership) of the user, ascending
    visibilities: list[tuple[int, str]]  # (stream, history_visibility), ascending
    user_id: str = ""

    def membership_at(self, stream: int) -> str | None:
        i = bisect.bisect_right(self.memberships, (stream, "\uffff"))
        return self.memberships[i - 1][1] if i else None

    def visibility_before(self, stream: int) -> str:
        i = bisect.bisect_left(self.visibilities, (stream, ""))
        return self.visibilities[i - 1][1] if i else "shared"

    def joined_at_or_after(self, stream: int) -> bool:
        return any(so >= stream and m == "join" for so, m in self.memberships)

    def may_see(self, event: Event) -> bool:
        if event.type == "m.room.member" and event.state_key == self.user_id:
            return True  # your own invites, kicks and bans: or the room never leaves your list
        return self.visible_at(event.stream_ordering or 0)

    def visible_at(self, so: int) -> bool:
        """Whether an event at stream position `so` (other than the user's own membership
        events, which are always visible) may be seen."""
        vis = self.visibility_before(so)
        if vis == "world_readable":
            return True
        membership = self.membership_at(so)
        if membership == "join":
            return True
        if vis == "invited":
            return membership == "invite"
        if vis == "shared":
            return self.joined_at_or_after(so)
        return False

    def visible_ranges(self) -> list[tuple[int, int]]:
        """`visible_at` as inclusive stream ranges (the last may end at OPEN_END), so a
        query can select what the user may see without loading it: the answer can only
        change where a visibility change takes effect, at a membership event, and after
        the user's last join."""
        bounds = {1} | {so + 1 for so, _ in self.visibilities} | {so for so, _ in self.memberships}
        joins = [so for so, m in self.memberships if m == "join"]
        if joins:
            bounds.add(max(joins) + 1)
        starts = sorted(b for b in bounds if b >= 1)
        ranges: list[tuple[int, int]] = []
        for i, lo in enumerate(starts):
            if not self.visible_at(lo):  # constant up to the next bound
                continue
            hi = starts[i + 1] - 1 if i + 1 < len(starts) else OPEN_END
            if ranges and ranges[-1][1] == lo - 1:
                ranges[-1] = (ranges[-1][0], hi)
            else:
                ranges.append((lo, hi))
        return ranges

    def ever_member(self) -> bool:
        return any(m in ("join", "invite") for _, m in self.memberships)


async def load_history(hs: "HomeServer", room_id: str, user_id: str) -> UserRoomHistory:
    def txn(cur):
        memberships = state_store.membership_history(cur, room_id, user_id)
        vis = [(so, visibility_of(js))
               for so, js in state_store.state_history(cur, room_id, "m.room.history_visibility")]
        return UserRoomHistory(memberships, vis, user_id)

    return await hs.db.run(txn)


async def require_can_read(hs: "HomeServer", room_id: str, user_id: str) -> UserRoomHistory:
    """The user must be or have been in the room, or the room must be world-readable;
    another tenant's room answers like a missing one."""
    head = await hs.tenancy.head_for(user_id, room_id)
    hist = await load_history(hs, room_id, user_id)
    if head is not None and head.membership_of(user_id) == "join":
        return hist
    world = head is not None and head.state.get(("m.room.history_visibility", "")) is not None \
        and head.state[("m.room.history_visibility", "")].content.get("history_visibility") == "world_readable"
    if head is None or not (hist.ever_member() or world):
        raise forbidden("you are not allowed to see this room")
    return hist


_OPENNESS = {"world_readable": 3, "shared": 2, "invited": 1, "joined": 0}


def _visible_by_state(hist: UserRoomHistory, event: Event, membership: str | None, vis: str | None) -> bool:
    vis = vis if vis in _OPENNESS else "shared"
    if event.type == "m.room.history_visibility":
        # At the boundary the more open of the old and the new setting applies.
        prev = ((event.internal.get("unsigned") or {}).get("prev_content") or {}).get("history_visibility")
        if prev in _OPENNESS and _OPENNESS[prev] > _OPENNESS[vis]:
            vis = prev
    if vis == "world_readable" or membership == "join":
        return True
    if vis == "invited":
        return membership == "invite"
    if vis == "shared":
        return hist.joined_at_or_after(event.stream_ordering or 0)
    return False


async def visible_events(hs: "HomeServer", hist: UserRoomHistory, room_id: str, events: list[Event]) -> list[Event]:
    """The events `hist.user_id` may see. Rooms of this server alone are linear, so the
    stream order of memberships is exact (`may_see`, no query). Rooms shared with other
    servers can fork: there the user's membership and the visibility setting are read from
    the state at each event (its state group), one query per call."""
    head = hs.room_heads.peek(room_id)
    federated = hs.federation is not None and head is not None and \
        any(not hs.accounts.is_mine(u) for u in head.members)
    if not federated or not events:
        return [e for e in events if hist.may_see(e)]
    inputs = await hs.db.run(state_store.visibility_inputs, [e.event_id for e in events], hist.user_id)
    out = []
    for e in events:
        if e.type == "m.room.member" and e.state_key == hist.user_id:
            out.append(e)
        elif e.event_id in inputs:
            if _visible_by_state(hist, e, *inputs[e.event_id]):
                out.append(e)
        elif hist.may_see(e):
            out.append(e)
    return out
