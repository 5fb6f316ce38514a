"""The sync engine: streams (typing, receipts, presence, account data, to-device, device
lists), the notifier that wakes long-polls, and the /sync builder, attached to the
HomeServer as `hs.sync`."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from homeserver.event import Event
from sync.account_data import AccountData
from sync.change_log import ChangeLog
from sync.device_lists import DeviceLists
from sync.e2e_counts import E2ECounts
from sync.lazy_members import SentMembers
from sync.notifier import Notifier
from sync.presence import Presence
from sync.receipts import Receipts
from sync.room_list import RoomList
from sync.tokens import StreamToken
from sync.timeline_cache import TimelineCache
from sync.to_device import ToDevice
from sync.typing import Typing
from sync.user_rooms import UserRooms

if TYPE_CHECKING:
    from homeserver.server import HomeServer


class SyncEngine:
    def __init__(self, hs: "HomeServer") -> None:
        self.hs = hs
        self.notifier = Notifier()
        self.user_rooms = UserRooms(hs)
        # Ephemeral updates as events, for listeners such as application services.
        self.ephemeral_listeners: list = []
        self.typing = Typing(self._typing_changed)
        self.typing.on_followed = self._wake_room
        # Several sync processes (sync/stream_followers.py, sync/presence_job.py): set when
        # this one follows the stream owner's streams and mirrors presence.
        self.followers: dict = {}
        self.presence_reader = None
        self.receipts = Receipts(hs, self._receipt_changed)
        self.account_data = AccountData(hs, self._wake_user)
        self.to_device = ToDevice(hs, self._wake_user)
        self.presence = Presence(hs, self._presence_changed)
        self.device_lists = DeviceLists(hs, self._wake_sharing)
        self.timeline_cache = TimelineCache()
        # (stream ordering, room) of every event persisted by this process: a woken
        # long-poll reads the rooms that changed after its token from here.
        self.room_log: ChangeLog = ChangeLog(0)
        self.sent_members = SentMembers()
        self.e2e_counts = E2ECounts(hs)
        self.room_list = RoomList(hs, self)  # rooms in activity order, for sliding sync
        from sync.sync_handler import SyncHandler
        self.handler = SyncHandler(hs, self)
        from sync.sliding_sync import SlidingSync
        self.sliding = SlidingSync(hs, self)

    async def start(self) -> None:
        for part in (self.receipts, self.account_data, self.to_device, self.device_lists):
            await part.start()
        # Several processes: presence is kept by the one running its job (by default the
        # stream owner; elsewhere the stream owner mirrors it: sync/presence_job.py).
        self.owns_presence = self.hs.config.presence.enabled and self.hs.config.worker.runs_job("presence")
        if self.owns_presence:
            await self.presence.start()
        self.room_log = ChangeLog(self.hs.persister.max_stream_ordering)
        self.hs.persister.add_listener(self._on_events)

    def stop(self) -> None:
        self.presence.stop()

    def forget_room(self, room_id: str) -> None:
        """A deleted room: drop everything the engine remembers of it."""
        self.timeline_cache.forget_room(room_id)
        self.room_list.forget_room(room_id)
        self.user_rooms.drop_room(room_id)
        self.handler._visibility.pop(room_id, None)
        self.handler._receipts_loaded.discard(room_id)
        self.receipts._room_stream.pop(room_id, None)

    def current_token(self) -> StreamToken:
        return StreamToken(
            events=self.hs.persister.max_stream_ordering,
            typing=self.typing.stream.current,
            receipts=self.receipts.stream.current,
            presence=self.presence.stream.current,
            account_data=self.account_data.stream.current,
            to_device=self.to_device.stream.current,
            device_lists=self.device_lists.stream.current,
        )

    # ---- who to wake --------------------------------------------------------------

    def _room_members(self, room_id: str) -> list[str]:
        head = self.hs.room_heads.peek(room_id)
        return head.joined_members() if head else []

    def _wake_room(self, room_id: str) -> None:
        self.notifier.notify_users(self._room_members(room_id))

    def _emit(self, event: dict) -> None:
        for fn in self.ephemeral_listeners:
            fn(event)

    def _typing_changed(self, room_id: str) -> None:
        self._wake_room(room_id)
        self._emit({"type": "m.typing", "room_id": room_id,
                    "content": {"user_ids": self.typing.typing_users(room_id)}})

    def _receipt_changed(self, room_id: str, event: dict | None) -> None:
        self._wake_room(room_id)
        if event is not None:  # (None: read from the owner's table by a sync process following it)
            self._emit(dict(event, room_id=room_id))

    def _presence_changed(self, user_id: str) -> None:
        self._wake_sharing(user_id)
        self._emit(self.presence.event_for(user_id))

    def _wake_user(self, user_id: str) -> None:
        self.notifier.notify_users([user_id])

    def sharing_users(self, user_id: str) -> set[str]:
        """Users who share a joined room with `user_id` (from the in-memory heads)."""
        users = {user_id}
        rooms = self.user_rooms._users.get(user_id)
        room_ids: Iterable[str] = (r for r, (m, _) in rooms.items() if m == "join") if rooms is not None else \
            (h.room_id for h in self.hs.room_heads.all() if h.membership_of(user_id) == "join")
        for room_id in room_ids:
            users.update(self._room_members(room_id))
        return users

    def shares_room(self, user_id: str, other: str) -> bool:
        """Whether the two users are both joined to some room (a user shares with
        themselves). Walks the room list of whichever of them is in fewer rooms."""
        if user_id == other:
            return True
        cached = self.user_rooms._users
        mine, theirs = cached.get(user_id), cached.get(other)
        if mine is None and theirs is None:
            return other in self.sharing_users(user_id)
        walker, target = (user_id, other) if theirs is None or (mine is not None and len(mine) <= len(theirs)) \
            else (other, user_id)
        peek = self.hs.room_heads.peek
        for room_id, (membership, _) in cached[walker].items():
            if membership == "join":
                head = peek(room_id)
                if head is not None and head.members.get(target) == "join":
                    return True
        return False

    def unloaded_rooms(self, user_id: str) -> list[str]:
        """The user's joined rooms whose heads are not in memory (after a restart, or
        evicted): `shares_room` cannot see into them."""
        rooms = self.user_rooms._users.get(user_id) or {}
        peek = self.hs.room_heads.peek
        return [r for r, (m, _) in rooms.items() if m == "join" and peek(r) is None]

    async def load_heads(self, user_id: str) -> None:
        """Bring the heads of the user's joined rooms into memory, where who shares a room
        with them is read."""
        for room_id in self.unloaded_rooms(user_id):
            await self.hs.room_heads.get(room_id)

    async def sharing_among(self, user_id: str, others: set[str]) -> set[str]:
        """Those of `others` sharing a joined room with `user_id` (the user among them):
        from the heads in memory (`shares_room`), and for the rest, when some of the user's
        rooms are not in memory, by walking the user's own rooms once they are loaded."""
        rooms = await self.user_rooms.rooms_of(user_id)
        found = {u for u in others if self.shares_room(user_id, u)}
        rest = others - found
        if rest and self.unloaded_rooms(user_id):
            await self.load_heads(user_id)
            peek = self.hs.room_heads.peek
            for room_id, (membership, _) in rooms.items():
                head = peek(room_id) if membership == "join" else None
                if head is not None:
                    found.update(u for u in rest if head.members.get(u) == "join")
        return found

    def _wake_sharing(self, user_id: str) -> None:
        self.notifier.notify_users(self.sharing_users(user_id))

    def _on_events(self, events: list[Event]) -> None:
        self.user_rooms.on_events(events)
        self.timeline_cache.on_events(events)
        self.room_list.on_events(events)
        self.handler.on_events(events)
        wake: set[str] = set()
        woken_rooms: set[str] = set()
        for ev in events:
            self.room_log.record(ev.stream_ordering or 0, ev.room_id)
            if ev.room_id not in woken_rooms:  # a batch often holds several events of one room
                woken_rooms.add(ev.room_id)
                wake.update(self._room_members(ev.room_id))
            if ev.type == "m.room.member" and ev.state_key:
                wake.add(ev.state_key)  # the invited, kicked or banned user too
            if self.owns_presence and self.hs.accounts.is_mine(ev.sender):
                self.presence.user_active(ev.sender)
        self.notifier.notify_users(wake)
