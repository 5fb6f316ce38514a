"""The in-memory form of a room event: the signed PDU as on the wire, plus its id."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from homeserver.room_versions import RoomVersion

StateKey = tuple[str, str]  # (event type, state_key)


@dataclass(slots=True, eq=False)
class Event:
    event_id: str
    room_version: RoomVersion
    pdu: dict[str, Any]  # hashed and signed PDU; only v1/v2 formats carry an event_id key
    # Set by the persist path, not part of the PDU:
    stream_ordering: int | None = None
    rejected: bool = False
    internal: dict[str, Any] = field(default_factory=dict)

    @property
    def type(self) -> str:
        return self.pdu["type"]

    @property
    def state_key(self) -> str | None:
        return self.pdu.get("state_key")

    def is_state(self) -> bool:
        return "state_key" in self.pdu

    @property
    def key(self) -> StateKey:
        return (self.pdu["type"], self.pdu["state_key"])

    @property
    def sender(self) -> str:
        return self.pdu["sender"]

    @property
    def content(self) -> dict[str, Any]:
        return self.pdu.get("content", {})

    @property
    def room_id(self) -> str:
        # Room version 12's create event has no room_id: the room id is derived from it.
        if self.room_version.room_id_from_create and self.pdu["type"] == "m.room.create":
            return "!" + self.event_id[1:]
        return self.pdu["room_id"]

    @property
    def prev_event_ids(self) -> list[str]:
        return _reference_ids(self.pdu.get("prev_events"), self.room_version)

    @property
    def auth_event_ids(self) -> list[str]:
        """The auth events the PDU lists (v12 create events are implied, not listed)."""
        return _reference_ids(self.pdu.get("auth_events"), self.room_version)

    @property
    def auth_parent_ids(self) -> list[str]:
        """The edges of the auth DAG from this event: its listed auth events plus, in
        v12 rooms, the create event that the room id names. Auth chains and state
        resolution walk these."""
        ids = self.auth_event_ids
        if self.room_version.room_id_from_create and self.pdu.get("type") != "m.room.create":
            room_id = self.pdu.get("room_id")
            if isinstance(room_id, str) and room_id.startswith("!"):
                ids = [*ids, "$" + room_id[1:]]
        return ids

    @property
    def depth(self) -> int:
        return self.pdu.get("depth", 0)

    @property
    def origin_server_ts(self) -> int:
        return self.pdu.get("origin_server_ts", 0)

    @property
    def redacts(self) -> str | None:
        if self.pdu["type"] != "m.room.redaction":
            return None
        if self.room_version.redacts_in_content:
            r = self.content.get("redacts")
        else:
            r = self.pdu.get("redacts")
        return r if isinstance(r, str) else None

    @property
    def membership(self) -> str | None:
        if self.pdu["type"] != "m.room.member":
            return None
        m = self.content.get("membership")
        return m if isinstance(m, str) else None

    def mark_redacted(self, redaction_id: str) -> None:
        """Serve the redacted form from now on (and drop the cached client forms)."""
        if not self.internal.get("redacted_by"):
            self.internal["redacted_by"] = redaction_id
            self.internal.pop("client", None)
            self.internal.pop("fragment", None)


def _reference_ids(refs: Any, rv: RoomVersion) -> list[str]:
    """Event ids from prev_events/auth_events: plain ids since v3, [id, hashes] pairs in
    v1/v2. Malformed entries are skipped; validating the PDU shape is the receiver's job."""
    if not isinstance(refs, list):
        return []
    if rv.event_ids_are_hashes:
        return [r for r in refs if isinstance(r, str)]
    return [r[0] for r in refs if isinstance(r, list | tuple) and r and isinstance(r[0], str)]
