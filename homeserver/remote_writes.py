"""Events for a room another writer owns (docs/scaling.md): a profile change reaching
every room of a user, a deactivation leaving them, an application service's send. The
event is handed to the owning writer over its internal listener, which builds,
authorises and persists it exactly as a local send; the answer is returned once this
process has replayed the event, so the caller reads its own write."""
from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from homeserver.errors import MatrixError
from homeserver.writer_layout import RoomMoved

if TYPE_CHECKING:
    from homeserver.event import Event
    from homeserver.server import HomeServer

SEND_PATH = "/_homeserver/internal/v1/send_event"
MOVED_RETRIES = 3


class RemoteWrites:
    def __init__(self, hs: "HomeServer") -> None:
        self.hs = hs
        self.cfg = hs.config.worker

    async def send(self, room_id: str, sender: str, event_type: str, content: dict,
                   state_key: str | None, txn: tuple[str, str, str] | None, ts: int | None) -> "Event":
        body = {"room_id": room_id, "sender": sender, "type": event_type, "content": content,
                "state_key": state_key, "txn": list(txn) if txn else None, "ts": ts}
        layout = self.hs.writer_layout
        for _ in range(MOVED_RETRIES):
            body["layout"] = layout.layout.generation  # the owner waits to know it too
            owner = layout.owner(room_id)
            if owner == layout.me:  # the room moved here meanwhile
                return await self.hs.event_creator.send(room_id, sender, event_type, content, state_key,
                                                        txn=txn, ts=ts)
            try:
                status, answer = await self.hs.internal.post(owner, SEND_PATH, body)
            except Exception as e:
                raise MatrixError(503, "M_UNKNOWN", f"the writer of {room_id} is unavailable") from e
            if status == 503 and isinstance(answer, dict) and "layout" in answer:
                await layout.after_moved(int(answer["layout"]))  # moved: ask its new owner
                continue
            if status != 200:
                raise MatrixError(status, answer.get("errcode", "M_UNKNOWN"), answer.get("error", ""))
            await self.hs.replication.wait_for(answer["stream_ordering"])
            event = await self.hs.event_cache.get(answer["event_id"])
            if event is None:
                raise MatrixError(503, "M_UNKNOWN", "the event was written but cannot be read yet")
            return event
        raise MatrixError(503, "M_UNKNOWN", f"the writer of {room_id} is changing; retry")


async def serve_send(hs: "HomeServer", body: bytes) -> tuple[int, dict]:
    """The writer's side of `RemoteWrites.send` (on an internal listener only)."""
    try:
        req = orjson.loads(body)
        if isinstance(req.get("layout"), int):  # the sender knows a newer layout than this writer
            await hs.writer_layout.until_generation(req["layout"], timeout=2.0)
        txn = tuple(req["txn"]) if req.get("txn") else None
        event = await hs.event_creator.send(req["room_id"], req["sender"], req["type"], req["content"],
                                            req.get("state_key"), txn=txn, ts=req.get("ts"), hand_on=False)
    except RoomMoved as e:
        return e.status, {**e.to_json(), "layout": e.generation}
    except MatrixError as e:
        return e.status, e.to_json()
    except (ValueError, KeyError, TypeError) as e:
        return 400, {"errcode": "M_BAD_JSON", "error": str(e)}
    return 200, {"event_id": event.event_id, "stream_ordering": event.stream_ordering}
