"""Push rules evaluated for every event, for every local member of its room but the
sender, inside the persist path:

1. when the event is queued (synchronously, right after it was applied to the room
   head), the room facts it is judged by are captured: the joined local members (a
   snapshot shared by the room's events until a membership changes), the member count
   and the sender's power;
2. before its batch is written, the compiled rules of members not in memory are loaded
   (one query for the whole batch), and every member's actions are worked out: each
   rule template is walked once per event, then each member costs a set look-up or two;
3. the members notified are written in the event's own transaction
   (storage.push.insert_push_actions, one COPY per batch);
4. after the commit, the in-memory unread counts go up and the pushers are nudged, before
   /sync long-polls are woken, so the count arrives in the same /sync as the event."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from homeserver import auth_rules
from homeserver.event import Event
from homeserver.push.activity import SyncActivity
from homeserver.push.counts import MAIN, UnreadCounts
from homeserver.push.rules import EventFacts, outcome_for
from homeserver.push.ruleset_cache import RulesetCache
from storage.push import PUSH_ROWS

if TYPE_CHECKING:
    from homeserver.room_heads import RoomHead
    from homeserver.server import HomeServer
    from storage.events import EventRow

logger = logging.getLogger(__name__)
_CONTEXT = "push_context"
RESULTS = "push_results"  # Event.internal key, until the listener has used them


@dataclass(slots=True)
class _Members:
    head: "RoomHead"
    local_joined: tuple[str, ...]
    joined_count: int


@dataclass(slots=True)
class _Context:
    members: _Members
    invitee: str | None
    sender_power: float
    notification_levels: Any


def thread_of(content: dict) -> str:
    """The thread an event belongs to: the root's event id for an m.thread relation, else
    the main timeline."""
    relates = content.get("m.relates_to")
    if isinstance(relates, dict) and relates.get("rel_type") == "m.thread":
        root = relates.get("event_id")
        if isinstance(root, str) and root:
            return root
    return MAIN


class Push:
    """Attached to the server as `hs.push`."""

    def __init__(self, hs: "HomeServer") -> None:
        self.hs = hs
        self.rules = RulesetCache(hs.db)
        self.counts = UnreadCounts(hs)
        self.activity = SyncActivity()
        self._members: dict[str, _Members] = {}
        # Told (user_ids) after a commit that gave them new notifications.
        self.on_notified: list[Callable[[set[str]], None]] = []
        self.evaluated_members = 0

    def rules_changed(self, user_id: str) -> None:
        self.rules.invalidate(user_id)
        self.hs.invalidate_elsewhere("push_rules", user_id)  # the writers evaluate them

    # ---- 1. at enqueue -------------------------------------------------------------

    def capture(self, row: "EventRow", event: Event) -> None:
        head = self.hs.room_heads.peek(row.room_id)
        if head is None:
            return
        members = self._members.get(row.room_id)
        if members is None or members.head is not head or event.type == "m.room.member":
            is_mine = self.hs.accounts.is_mine
            joined = [u for u, m in head.members.items() if m == "join"]
            members = _Members(head, tuple(u for u in joined if is_mine(u)), len(joined))
            self._members[row.room_id] = members
        invitee = None
        if event.membership == "invite" and event.state_key and self.hs.accounts.is_mine(event.state_key):
            invitee = event.state_key
        power_levels = head.state.get(("m.room.power_levels", ""))
        row.extra[_CONTEXT] = _Context(
            members, invitee, auth_rules.get_user_power_level(event.sender, head.state),
            power_levels.content.get("notifications") if power_levels is not None else None)

    # ---- 2. before the batch is written ----------------------------------------------

    async def prepare(self, batch: list[tuple["EventRow", Event]]) -> None:
        wanted: set[str] = set()
        snapshots: set[int] = set()  # a room's events share a member snapshot: read it once
        for row, _ in batch:
            ctx = row.extra.get(_CONTEXT)
            if ctx is not None:
                if id(ctx.members) not in snapshots:
                    snapshots.add(id(ctx.members))
                    wanted.update(ctx.members.local_joined)
                if ctx.invitee:
                    wanted.add(ctx.invitee)
        if self.rules.missing(wanted):
            await self.rules.ensure(wanted)
        for row, event in batch:
            ctx = row.extra.pop(_CONTEXT, None)
            if ctx is None:
                continue
            try:
                results = self._evaluate(event, ctx)
            except Exception:  # a bug here must not stop the event itself
                logger.exception("push evaluation of %s failed", event.event_id)
                continue
            if results:
                row.extra[PUSH_ROWS] = results
                event.internal[RESULTS] = results

    def _evaluate(self, event: Event, ctx: _Context) -> list[tuple[str, str, bool, str]]:
        members = ctx.members
        pdu = event.pdu
        if "room_id" not in pdu:
            pdu = dict(pdu, room_id=event.room_id)
        state = members.head.state

        def display_name(user_id: str) -> str | None:
            member = state.get(("m.room.member", user_id))
            name = member.content.get("displayname") if member is not None else None
            return name if isinstance(name, str) else None

        facts = EventFacts(pdu, members.joined_count, ctx.sender_power, ctx.notification_levels,
                           display_name)
        thread = thread_of(event.content)
        sender = event.sender
        recipients = members.local_joined
        if ctx.invitee and ctx.invitee not in recipients:
            recipients = recipients + (ctx.invitee,)
        peek, default = self.rules.peek, self.rules.default
        out = []
        for user_id in recipients:
            if user_id == sender:
                continue
            plan = (peek(user_id) or default).plan(facts)
            if not plan:
                continue
            dependent, outcome = plan[0]
            if dependent is not None:
                outcome = outcome_for(plan, facts, user_id)
            if outcome is not None and outcome.notify:
                out.append((user_id, thread, outcome.highlight, outcome.actions_json))
        self.evaluated_members += len(recipients)
        return out

    # ---- 4. after the commit -----------------------------------------------------------

    def on_persisted(self, events: list[Event]) -> None:
        notified: set[str] = set()
        for event in events:
            if event.membership == "join" and event.state_key:
                self.counts.joined(event.state_key, event.room_id, event.stream_ordering or 0)
            results = event.internal.pop(RESULTS, None)
            if results:
                self.counts.add(event.room_id, event.stream_ordering or 0, results)
                notified.update(r[0] for r in results)
        if notified:
            for fn in self.on_notified:
                fn(notified)
