"""Long admin operations run in the background with a stored status: purging a room's
history and deleting (shutting down and purging) a room. Both keep the in-memory state
coherent with what they change in PostgreSQL: the event cache forgets what is gone,
the recent-timeline cache of the room is dropped, events pruned in place are pruned in
memory too, and a deleted room leaves the room heads and the sync engine's user-room
lists (so it answers 404 like a room that never existed)."""
from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import orjson
from twisted.internet import defer

from homeserver.errors import MatrixError
from homeserver.redaction import prune_event_dict
from homeserver.room_directory import set_published
from homeserver.room_versions import RoomVersion
from storage import admin_rooms as admin_rooms_store
from storage import admin_tasks as tasks_store
from storage import directory as directory_store
from storage import purge as purge_store

if TYPE_CHECKING:
    from homeserver.audit import Origin
    from homeserver.config import WorkerConfig
    from homeserver.event import Event
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)
STATUS_KEPT_MS = 24 * 3600 * 1000  # finished tasks are listed by room for a day, as in Synapse
DEFAULT_ROOM_NAME = "Content Violation Notification"
DEFAULT_MESSAGE = "Sharing illegal content on this server is not permitted and rooms in violation will be blocked."


def _now() -> int:
    return int(time.time() * 1000)


def interrupted_instances(worker: "WorkerConfig") -> list[str] | None:
    """Whose unfinished tasks a process starting up knows to be dead: its own; alone
    (role main), every task's; in a cluster also those of the single process `main` it
    grew from (which never runs beside it), unless an instance of the cluster is so named."""
    if not worker.multi_process:
        return None
    return [worker.instance_name] + (["main"] if "main" not in worker.instances else [])


async def fail_interrupted(hs: "HomeServer") -> None:
    n = await hs.db.run(tasks_store.fail_interrupted, interrupted_instances(hs.config.worker), _now())
    if n:
        logger.warning("%d admin task(s) were interrupted by a restart and are marked failed", n)


def _start(hs: "HomeServer", task_id: str, work: Callable[[], Awaitable[Any]]) -> None:
    async def run() -> None:
        await hs.db.run(tasks_store.update, task_id, "active", _now())
        try:
            result = await work()
        except Exception as e:
            logger.exception("admin task %s failed", task_id)
            error = e.error if isinstance(e, MatrixError) else str(e) or type(e).__name__
            await hs.db.run(tasks_store.update, task_id, "failed", _now(), None, error)
            return
        await hs.db.run(tasks_store.update, task_id, "complete", _now(), result)
    defer.ensureDeferred(run()).addErrback(lambda f: logger.error("admin task %s: %s", task_id, f.getTraceback()))


async def _new_task(hs: "HomeServer", kind: str, room_id: str, tenant_id: str | None) -> str:
    task_id = secrets.token_urlsafe(12)
    await hs.db.run(tasks_store.create, task_id, kind, room_id, tenant_id, hs.config.worker.instance_name, _now())
    return task_id


# ---- memory written through ---------------------------------------------------------

def prune_json(text: str, rv: RoomVersion) -> str:
    pdu = orjson.loads(text)
    return orjson.dumps(prune_event_dict(pdu, rv)).decode()


def prune_in_memory(event: "Event") -> None:
    event.pdu = prune_event_dict(event.pdu, event.room_version)
    for key in ("client", "fragment"):
        event.internal.pop(key, None)


def forget_events(hs: "HomeServer", room_id: str, gone: list[str], pruned: list[str]) -> None:
    """Events deleted (`gone`) or pruned in place in one room."""
    hs.event_cache.forget(gone)
    for event_id in pruned:
        cached = hs.event_cache.peek(event_id)
        if cached is not None:
            prune_in_memory(cached)
    head = hs.room_heads.peek(room_id)
    if head is not None and pruned:
        for ev in head.state.values():
            if ev.event_id in pruned:
                prune_in_memory(ev)
    hs.aggregations.forget_all()  # bundles may hold the events' old content
    if hs.sync is not None:
        hs.sync.timeline_cache.forget_room(room_id)
    hs.invalidate_elsewhere("room_purged", room_id)  # several processes: the others drop the room's events


def forget_purged_events(hs: "HomeServer", room_id: str) -> None:
    """Another process pruned (erasure) or purged events of the room: what this one holds
    of them goes (read again when next needed).

    Except on the room's writer: its head is where events are built, ahead of the tables
    while events are queued, so a head read again from the tables would lose them. It
    does not need to go: erasure prunes only events outside the current state, and
    history purges run on the writer, which prunes its head in place. Nor do the queued
    events (not in the tables, so not pruned)."""
    if hs.builds_room(room_id):
        hs.event_cache.forget_room(room_id, keep=hs.persister.pending_event_ids(room_id))
    else:
        hs.room_heads.invalidate(room_id)
        hs.event_cache.forget_room(room_id)
    hs.aggregations.forget_all()
    if hs.sync is not None:
        hs.sync.timeline_cache.forget_room(room_id)


def forget_room(hs: "HomeServer", room_id: str, replicate: bool = True) -> None:
    """A deleted room: nothing of it stays in memory."""
    hs.room_heads.invalidate(room_id)
    hs.event_cache.forget_room(room_id)
    hs.aggregations.forget_all()
    if hs.sync is not None:
        hs.sync.forget_room(room_id)
    if replicate:
        hs.invalidate_elsewhere("room_deleted", room_id)  # several processes: in theirs neither


# ---- purge history --------------------------------------------------------------------

async def start_purge_history(hs: "HomeServer", room_id: str, tenant_id: str | None, cutoff_depth: int,
                              delete_local: bool, origin: "Origin") -> str:
    task_id = await _new_task(hs, "purge_history", room_id, tenant_id)

    async def work() -> dict:
        head = await hs.room_heads.get(room_id)
        if head is None:
            raise MatrixError(404, "M_NOT_FOUND", "room not found")
        rv = head.room_version
        purged, pruned = await hs.db.run(
            purge_store.purge_history, room_id, cutoff_depth, ":" + hs.server_name, delete_local,
            lambda text: prune_json(text, rv))
        forget_events(hs, room_id, purged, pruned)
        await hs.audit.record("purge_history.complete", origin, target_room=room_id, purge_id=task_id,
                              events_deleted=len(purged), events_pruned=len(pruned))
        return {"events_deleted": len(purged)}

    _start(hs, task_id, work)
    return task_id


# ---- delete room --------------------------------------------------------------------

@dataclass
class DeleteParams:
    requester: str
    block: bool = False
    purge: bool = True
    force_purge: bool = False
    new_room_user_id: str | None = None
    room_name: str | None = None
    message: str | None = None


@dataclass
class ShutdownResult:
    kicked_users: list[str] = field(default_factory=list)
    failed_to_kick_users: list[str] = field(default_factory=list)
    local_aliases: list[str] = field(default_factory=list)
    new_room_id: str | None = None

    def as_dict(self) -> dict:
        return {"kicked_users": self.kicked_users, "failed_to_kick_users": self.failed_to_kick_users,
                "local_aliases": self.local_aliases, "new_room_id": self.new_room_id}


async def start_delete_room(hs: "HomeServer", room_id: str, tenant_id: str | None, params: DeleteParams,
                            origin: "Origin") -> str:
    task_id = await _new_task(hs, "delete_room", room_id, tenant_id)

    async def work() -> dict:
        result = await shutdown_room(hs, room_id, tenant_id, params)
        await hs.db.run(tasks_store.update, task_id, "active", _now(), result.as_dict())
        if params.purge and await hs.room_heads.get(room_id) is not None:
            await purge_room(hs, room_id, params.force_purge)
        await hs.audit.record("delete_room.complete", origin, target_room=room_id, tenant_id=tenant_id,
                              delete_id=task_id, purged=params.purge, **result.as_dict())
        return result.as_dict()

    _start(hs, task_id, work)
    return task_id


async def shutdown_room(hs: "HomeServer", room_id: str, tenant_id: str | None,
                        params: DeleteParams) -> ShutdownResult:
    """Move the room's local users out (they leave; into a new room when asked), move its
    local aliases, take it out of the directory. Blocked meanwhile so nobody rejoins."""
    result = ShutdownResult()
    was_blocked = hs.room_blocks.blocked_by(room_id) is not None
    await hs.room_blocks.block(room_id, params.requester, tenant_id)
    try:
        head = await hs.room_heads.get(room_id)
        if head is None:
            return result  # unknown room: blocking it (if asked) was all there was to do
        if params.new_room_user_id is not None:
            result.new_room_id = await _new_room(hs, params)
        for user_id, _membership in await hs.db.run(admin_rooms_store.local_members, room_id, hs.server_name):
            try:
                await hs.membership.set_membership(user_id, room_id, user_id, "leave")
            except MatrixError as e:
                logger.warning("could not remove %s from %s: %s", user_id, room_id, e.error)
                result.failed_to_kick_users.append(user_id)
                continue
            result.kicked_users.append(user_id)
            await hs.sync.user_rooms.user_forgot(user_id, room_id)  # on the sync process too
            if result.new_room_id is not None and user_id != params.new_room_user_id:
                try:
                    await hs.membership.join(user_id, result.new_room_id)
                except MatrixError as e:
                    logger.warning("could not move %s into %s: %s", user_id, result.new_room_id, e.error)
        result.local_aliases = await hs.db.run(directory_store.aliases_for_room, room_id)
        if result.new_room_id is not None:
            await hs.db.run(directory_store.move_aliases, room_id, result.new_room_id)
        else:
            for alias in result.local_aliases:
                await hs.db.run(directory_store.delete_alias, alias)
        await set_published(hs, room_id, False)
        return result
    finally:
        if not params.block and not was_blocked:
            await hs.room_blocks.unblock(room_id)


async def _new_room(hs: "HomeServer", params: DeleteParams) -> str:
    from homeserver.room_creation import create_room  # the room core, imported late like elsewhere
    creator = params.new_room_user_id
    assert creator is not None
    room_id, _alias = await create_room(hs, creator, {
        "preset": "public_chat", "name": params.room_name or DEFAULT_ROOM_NAME,
        "power_level_content_override": {"users_default": -10}})
    await hs.event_creator.send(room_id, creator, "m.room.message",
                                {"msgtype": "m.text", "body": params.message or DEFAULT_MESSAGE}, None)
    return room_id


async def purge_room(hs: "HomeServer", room_id: str, force: bool) -> None:
    """Delete every trace of the room once its local users are out."""
    await hs.persister.wait_idle()  # the leaves just sent must land before the room goes
    if not force:
        still = [u for u, m in await hs.db.run(admin_rooms_store.local_members, room_id, hs.server_name)
                 if m == "join"]
        if still:
            raise MatrixError(400, "M_UNKNOWN", f"users are still joined to this room: {', '.join(still)}")
    hs.persister.discard_room(room_id)
    count = await hs.db.run(purge_store.delete_room, room_id)
    forget_room(hs, room_id)
    logger.info("deleted room %s (%d events)", room_id, count)
