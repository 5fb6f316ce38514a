"""Sliding sync connections: what each (user, device, conn_id) has been sent, in memory.

Each response gets a new `pos` naming the connection state after it. A request names the
state it builds on; the states issued before that one are dropped (the client has moved
past them), the ones after it are kept, so a retried or cancelled-and-resent request with
the same `pos` is answered again from the same state. An unknown `pos` (never issued to
this user, device and conn_id, expired, evicted, or from before a restart) is 400
M_UNKNOWN_POS: the client starts over without one.

Bounds: `sliding_sync.max_connections` connections in all (least recently used evicted),
10 conn_ids per device, 8 states per connection; a connection unused for
`sliding_sync.connection_ttl_seconds` expires."""
from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from homeserver.errors import MatrixError
from sync.sliding_request import RoomConfig
from sync.tokens import StreamToken

MAX_CONN_IDS_PER_DEVICE = 10
MAX_STATES = 8
SWEEP_EVERY_SECONDS = 60.0

ConnKey = tuple[str, str, str]  # (user, device, conn_id)


@dataclass(frozen=True)
class RoomSent:
    """A room as the connection last sent it."""
    live: bool              # sent with everything up to the state's token
    upto: int               # when not live: events up to this position were sent
    membership: str
    config: RoomConfig      # the effective config it was sent with
    members: frozenset[str] = frozenset()  # member events sent for lazy loading


@dataclass
class ConnState:
    token: StreamToken
    rooms: dict[str, RoomSent] = field(default_factory=dict)
    lists: dict[str, tuple[int, tuple[str, ...]]] = field(default_factory=dict)  # count, window


@dataclass
class _Connection:
    states: "OrderedDict[str, ConnState]" = field(default_factory=OrderedDict)
    last_used: float = 0.0


def unknown_pos() -> MatrixError:
    return MatrixError(400, "M_UNKNOWN_POS", "unknown or expired pos: start again without one")


class Connections:
    def __init__(self, max_connections: int, ttl_seconds: float) -> None:
        self.max_connections = max_connections
        self.ttl = ttl_seconds
        self._conns: "OrderedDict[ConnKey, _Connection]" = OrderedDict()
        self._by_device: dict[tuple[str, str], list[str]] = {}
        # Unique across restarts too (a pos from an earlier process never matches).
        self._seq = itertools.count(time.time_ns() // 1000)
        self._last_sweep = time.monotonic()

    def __len__(self) -> int:
        return len(self._conns)

    def state(self, key: ConnKey, pos: str) -> ConnState:
        """The state `pos` names; states issued before it are dropped."""
        conn = self._conns.get(key)
        now = time.monotonic()
        if conn is None or now - conn.last_used > self.ttl:
            if conn is not None:
                self._drop(key)
            raise unknown_pos()
        state = conn.states.get(pos)
        if state is None:
            raise unknown_pos()
        while next(iter(conn.states)) != pos:
            conn.states.popitem(last=False)
        conn.last_used = now
        self._conns.move_to_end(key)
        return state

    def start(self, key: ConnKey) -> None:
        """A request without `pos`: the connection starts over."""
        if key in self._conns:
            self._drop(key)

    def record(self, key: ConnKey, state: ConnState) -> str:
        """Store the state after a response; returns its `pos`."""
        now = time.monotonic()
        if now - self._last_sweep > SWEEP_EVERY_SECONDS:
            self._sweep(now)
        conn = self._conns.get(key)
        if conn is None:
            device = key[:2]
            conn_ids = self._by_device.setdefault(device, [])
            if len(conn_ids) >= MAX_CONN_IDS_PER_DEVICE:
                self._drop((*device, conn_ids[0]))
                conn_ids = self._by_device.setdefault(device, [])
            conn_ids.append(key[2])
            conn = self._conns[key] = _Connection()
            while len(self._conns) > self.max_connections:
                self._drop(next(iter(self._conns)))
        pos = f"{next(self._seq)}/{state.token.encode()}"
        conn.states[pos] = state
        while len(conn.states) > MAX_STATES:
            conn.states.popitem(last=False)
        conn.last_used = now
        self._conns.move_to_end(key)
        return pos

    def _drop(self, key: ConnKey) -> None:
        self._conns.pop(key, None)
        conn_ids = self._by_device.get(key[:2])
        if conn_ids is not None:
            if key[2] in conn_ids:
                conn_ids.remove(key[2])
            if not conn_ids:
                del self._by_device[key[:2]]

    def _sweep(self, now: float) -> None:
        self._last_sweep = now
        for key in [k for k, c in self._conns.items() if now - c.last_used > self.ttl]:
            self._drop(key)

    def drop_device(self, user_id: str, device_id: str) -> None:
        for conn_id in list(self._by_device.get((user_id, device_id), ())):
            self._drop((user_id, device_id, conn_id))
