"""Which writer owns a room: rendezvous (highest random weight) hashing of the room id
over the configured writers. Stable across processes and restarts (no salt, no process
state), and adding a writer moves only the rooms the new writer wins, about 1/N of them."""
from __future__ import annotations

import hashlib


def _weight(writer: str, room_id: str) -> bytes:
    return hashlib.blake2b(f"{writer}\x00{room_id}".encode(), digest_size=8).digest()


def writer_for_room(room_id: str, writers: list[str]) -> str:
    if not writers:
        raise ValueError("no writers")
    return max(writers, key=lambda w: (_weight(w, room_id), w))
