"""Which member events each device has already been sent, for lazy-loaded members.

With `lazy_load_members`, an incremental /sync carries the member event of each timeline
sender only if the device does not have it yet (unless `include_redundant_members`). The
record is kept in memory per (user, device, room, member), bounded (least recently used
entries are dropped), and lost on restart: forgetting only means a member event is sent
again, which clients handle.

An entry remembers the event id sent and the events-stream position of the response that
carried it. It counts as received only once the device syncs from a token at or past that
position: a response lost on the way (the client retries from the same token) is sent
again with its members."""
from __future__ import annotations

from homeserver.lru import LRU

MAX_ENTRIES = 200_000  # about 40 MB at most


class SentMembers:
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._sent: LRU[tuple[str, str, str, str], tuple[str, int]] = LRU(max_entries)

    def already_sent(self, user_id: str, device_id: str, room_id: str, member: str, event_id: str,
                     since_pos: int) -> bool:
        entry = self._sent.get((user_id, device_id, room_id, member))
        return entry is not None and entry[0] == event_id and entry[1] <= since_pos

    def record(self, user_id: str, device_id: str, room_id: str, member: str, event_id: str,
               pos: int) -> None:
        key = (user_id, device_id, room_id, member)
        entry = self._sent.get(key)
        if entry is not None and entry[0] == event_id and entry[1] <= pos:
            return  # an earlier response already carried it: keep the earlier position
        self._sent.put(key, (event_id, pos))
