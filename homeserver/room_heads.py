"""The hot in-memory state of each room, written through on every persisted event:
current state, forward extremities, depth and state group. Sending to a room touches
Postgres only to write."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from homeserver.async_utils import Coalescer
from homeserver.event import Event, StateKey
from homeserver.event_cache import event_from_stored
from homeserver.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion
from storage import state as state_store

if TYPE_CHECKING:
    from storage.database import Database


@dataclass
class RoomHead:
    room_id: str
    room_version: RoomVersion
    state: dict[StateKey, Event]
    extremities: list[str]
    depth: int
    state_group: int
    chain_length: int
    is_public: bool = False
    # Bumped on every accepted event; lets readers notice change cheaply.
    version: int = 0
    members: dict[str, str] = field(default_factory=dict)  # user_id -> membership
    # Rooms created on another server (federation): (our tenant for it,). None: the create
    # event's tenant key decides, as for every room created here.
    remote_tenant: tuple[str | None] | None = None

    def membership_of(self, user_id: str) -> str | None:
        return self.members.get(user_id)

    def joined_members(self) -> list[str]:
        return [u for u, m in self.members.items() if m == "join"]

    def apply_state(self, event: Event) -> None:
        self.state[event.key] = event
        if event.type == "m.room.member" and event.membership:
            self.members[event.state_key] = event.membership


class RoomHeads:
    def __init__(self, db: "Database") -> None:
        self._db = db
        self._heads: dict[str, RoomHead] = {}
        self._loading = Coalescer()
        # Rooms invalidated while their head was being loaded, and how often: that load
        # may have read the tables before the change, so what it returns is not kept,
        # and requests coming after the change start a load of their own.
        self._generation: dict[str, int] = {}

    def peek(self, room_id: str) -> RoomHead | None:
        return self._heads.get(room_id)

    def add(self, head: RoomHead) -> None:
        self._heads[head.room_id] = head

    def all(self) -> list[RoomHead]:
        return list(self._heads.values())

    def loading(self) -> set[str]:
        """Rooms whose head is being loaded."""
        return {room_id for room_id, _ in self._loading.keys()}

    def invalidate(self, room_id: str) -> None:
        """Forget the room's head (read again when next needed), and any being loaded."""
        self._heads.pop(room_id, None)
        generation = self._generation.get(room_id, 0)
        if self._loading.running((room_id, generation)):
            self._generation[room_id] = generation + 1

    async def get(self, room_id: str) -> RoomHead | None:
        head = self._heads.get(room_id)
        if head is not None:
            return head
        # One load per room however many requests ask at once.
        generation = self._generation.get(room_id, 0)
        return await self._loading.run((room_id, generation), lambda: self._load(room_id, generation))

    async def _load(self, room_id: str, generation: int) -> RoomHead | None:
        data = await self._db.run(state_store.load_room_head, room_id)
        stale = self._generation.get(room_id, 0) != generation
        if data is None:
            return None
        rv = KNOWN_ROOM_VERSIONS[data["room_version"]]
        state: dict[StateKey, Event] = {}
        for stored in data["state"]:
            ev = event_from_stored(stored, rv.identifier)
            state[ev.key] = ev
        extremities = data["extremities"]
        head = RoomHead(
            room_id=room_id, room_version=rv, state={}, extremities=[e[0] for e in extremities],
            depth=max(e[1] for e in extremities), state_group=data["state_group"][0],
            chain_length=data["state_group"][1], is_public=data["is_public"],
            remote_tenant=data["remote_tenant"],
        )
        for ev in state.values():
            head.apply_state(ev)
        if stale:  # good for the requests that waited for it, not to keep
            return self._heads.get(room_id, head)
        if room_id not in self._heads:
            self._heads[room_id] = head
        return self._heads[room_id]
