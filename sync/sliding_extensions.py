"""Sliding sync extensions: to_device (MSC3885), e2ee (MSC3884), account_data (MSC3959),
receipts (MSC3960), typing (MSC3961). Each reads the same streams /sync reads, and each
answers "nothing new" from memory when its stream has not moved past the connection's
token. `account_data`, `receipts` and `typing` cover the rooms of the lists and
subscriptions their `lists`/`rooms` name (all by default)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from homeserver.event import Event
from sync.sliding_request import MEMBER, Scope, SlidingRequest
from sync.tokens import StreamToken

if TYPE_CHECKING:
    from homeserver.server import HomeServer
    from sync.engine import SyncEngine


@dataclass
class ExtensionContext:
    user_id: str
    device_id: str
    since: StreamToken | None
    now: StreamToken
    rooms: dict[str, tuple[str, int]]          # the user's rooms (UserRooms.rooms_of)
    list_rooms: dict[str, list[str]]           # list key -> rooms in its ranges
    subscribed: set[str]                       # rooms subscribed to (visible ones)
    initial: set[str] = field(default_factory=set)  # rooms sent with initial: true now
    timelines: dict[str, list[Event]] = field(default_factory=dict)

    def scoped(self, scope: Scope) -> set[str]:
        out: set[str] = set()
        for key, room_ids in self.list_rooms.items():
            if scope.lists is None or key in scope.lists:
                out.update(room_ids)
        out.update(r for r in self.subscribed if scope.rooms is None or r in scope.rooms)
        return out

    def is_initial(self, room_id: str) -> bool:
        return self.since is None or room_id in self.initial


async def build(hs: "HomeServer", engine: "SyncEngine", req: SlidingRequest,
                ctx: ExtensionContext) -> tuple[dict[str, Any], bool, int]:
    """(the `extensions` object, whether it carries news, the to-device position the
    connection's token should hold)."""
    out: dict[str, Any] = {}
    news = False
    to_device_pos = engine.to_device.stream.current
    if req.to_device:
        events, to_device_pos = await engine.to_device.fetch(ctx.user_id, ctx.device_id, req.to_device_since or 0)
        out["to_device"] = {"next_batch": str(to_device_pos), "events": events}
        news |= bool(events)
    if req.e2ee:
        out["e2ee"], changed = await _e2ee(hs, engine, ctx)
        news |= changed
    if req.account_data is not None:
        out["account_data"], changed = await _account_data(engine, ctx, ctx.scoped(req.account_data))
        news |= changed
    if req.receipts is not None:
        out["receipts"] = {"rooms": await _receipts(engine, ctx, ctx.scoped(req.receipts))}
        news |= bool(out["receipts"]["rooms"])
    if req.typing is not None:
        out["typing"] = {"rooms": _typing(engine, ctx, ctx.scoped(req.typing))}
        news |= bool(out["typing"]["rooms"])
    return out, news, to_device_pos


async def _e2ee(hs: "HomeServer", engine: "SyncEngine", ctx: ExtensionContext) -> tuple[dict, bool]:
    counts, fallback = await engine.e2e_counts.get(ctx.user_id, ctx.device_id)
    out: dict[str, Any] = {"device_one_time_keys_count": counts,
                           "device_unused_fallback_key_types": fallback}
    since, now = ctx.since, ctx.now
    if since is None:
        return out, False
    changed: set[str] = set()
    left: set[str] = set()
    if _membership_moved(engine, ctx):
        # Someone came or went: the database knows who now shares a room and who no longer does.
        came, gone = await engine.device_lists.changes_for(
            ctx.user_id, since.events, now.events, since.device_lists, now.device_lists)
        changed, left = set(came), set(gone)
    elif now.device_lists > since.device_lists:
        changed = {u for u in await engine.device_lists.changed_since(since.device_lists, now.device_lists)
                   if engine.shares_room(ctx.user_id, u)}
    if changed or left:
        visible = await hs.tenancy.visible_users(ctx.user_id, changed | left)
        changed &= visible
        left &= visible
    out["device_lists"] = {"changed": sorted(changed), "left": sorted(left)}
    return out, bool(changed or left)


def _membership_moved(engine: "SyncEngine", ctx: ExtensionContext) -> bool:
    """Whether anyone joined or left one of the user's rooms (the user included) after the
    token, from memory where it can tell."""
    since = ctx.since
    assert since is not None
    if since.events >= ctx.now.events:
        return False
    keys = engine.room_log.keys_after(since.events, 4 * len(ctx.rooms) + 64)
    if keys is None:
        return True
    cache = engine.timeline_cache
    for room_id in set(keys):
        known = ctx.rooms.get(room_id)
        if known is None:
            continue
        if known[1] > since.events:
            return True  # the user's own membership changed
        if known[0] != "join":
            continue
        found = cache.tail(room_id, since.events, ctx.now.events, 1, lambda e: e.type == MEMBER)
        if found is None or found[0]:
            return True
    return False


async def _account_data(engine: "SyncEngine", ctx: ExtensionContext, scope: set[str]) -> tuple[dict, bool]:
    ad = engine.account_data
    since = ctx.since
    global_events: list[dict] = []
    rooms: dict[str, list[dict]] = {}
    initial_rooms = [r for r in scope if ctx.is_initial(r)]
    if since is None or initial_rooms:
        # Everything the user has, for the global part of a new connection and for rooms
        # the client is seeing for the first time.
        all_global, all_rooms = await ad.changed_since(ctx.user_id, 0)
        if since is None:
            global_events = all_global
        rooms.update((r, all_rooms[r]) for r in initial_rooms if r in all_rooms)
    if since is not None and await ad.user_stream(ctx.user_id) > since.account_data:
        new_global, new_rooms = await ad.changed_since(ctx.user_id, since.account_data)
        global_events = new_global
        rooms.update((r, events) for r, events in new_rooms.items() if r in scope and r not in rooms)
    return {"global": global_events, "rooms": rooms}, bool(global_events or rooms) and since is not None


async def _receipts(engine: "SyncEngine", ctx: ExtensionContext, scope: set[str]) -> dict[str, dict]:
    joined = [r for r in scope if ctx.rooms.get(r, ("",))[0] == "join"]
    if not joined:
        return {}
    await engine.handler.remember_receipt_streams(joined)
    receipts = engine.receipts
    full, since_some = [], []
    for room_id in joined:
        known = receipts.known_room_stream(room_id) or 0
        if ctx.is_initial(room_id):
            if known:
                full.append(room_id)
        elif known > ctx.since.receipts:  # type: ignore[union-attr]
            since_some.append(room_id)
    out: dict[str, dict] = {}
    if since_some:
        out.update(await receipts.receipt_events(since_some, ctx.since.receipts,  # type: ignore[union-attr]
                                                 ctx.now.receipts, ctx.user_id))
    if full:
        # A room new to the client: the receipts on the events it is sent, and the user's own.
        for room_id, event in (await receipts.receipt_events(full, 0, ctx.now.receipts, ctx.user_id)).items():
            shown = {e.event_id for e in ctx.timelines.get(room_id, ())}
            content: dict[str, dict] = {}
            for event_id, by_type in event["content"].items():
                for rtype, by_user in by_type.items():
                    for user, receipt in by_user.items():
                        if event_id in shown or user == ctx.user_id:
                            content.setdefault(event_id, {}).setdefault(rtype, {})[user] = receipt
            if content:
                out[room_id] = {"type": "m.receipt", "content": content}
    return out


def _typing(engine: "SyncEngine", ctx: ExtensionContext, scope: set[str]) -> dict[str, dict]:
    typing = engine.typing
    out: dict[str, dict] = {}
    for room_id in scope:
        if ctx.rooms.get(room_id, ("",))[0] != "join":
            continue
        if ctx.is_initial(room_id):
            users = typing.typing_users(room_id)
            if not users:
                continue
        elif typing.changed_since(room_id, ctx.since.typing):  # type: ignore[union-attr]
            users = typing.typing_users(room_id)
        else:
            continue
        out[room_id] = {"type": "m.typing", "content": {"user_ids": users}}
    return out
