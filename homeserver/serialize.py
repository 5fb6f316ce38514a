"""Events in the client-server format: no DAG fields, `unsigned` with age, prev_content,
transaction_id for the sender's own device, and the redacted form where redacted.
The fixed part of each event's client form is built once and kept on the event."""
from __future__ import annotations

import time
from typing import Any

import orjson

from homeserver.event import Event
from homeserver.redaction import prune_event_dict

_CLIENT_KEYS = ("type", "content", "sender", "origin_server_ts", "state_key", "redacts")


def _client_fields(event: Event, pdu: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: pdu[k] for k in _CLIENT_KEYS if k in pdu}
    out["content"] = pdu.get("content", {})
    out["event_id"] = event.event_id
    out.setdefault("origin_server_ts", 0)
    if event.type == "m.room.redaction":
        if "redacts" not in out:
            # v11+ moved `redacts` into content; clients still read the top-level key.
            r = event.redacts
            if r:
                out["redacts"] = r
        elif isinstance(out["content"], dict) and "redacts" not in out["content"]:
            # Before v11 it is top-level only; newer clients read it from content.
            out["content"] = {**out["content"], "redacts": out["redacts"]}
    return out


def serialize_event(event: Event, requester_device: str | None = None,
                    redaction: Event | None = None, now: int | None = None,
                    include_room_id: bool = True, relations: dict[str, Any] | None = None) -> dict[str, Any]:
    """`requester_device` is "user_id|device_id" of the asker; `redaction` the event that
    redacted this one, if any (its presence means: serve the redacted form); `relations`
    the bundled aggregations (`unsigned.m.relations`, see homeserver/aggregations.py). The
    result shares nested values with the cache: callers must not mutate it in place."""
    if redaction is None:
        base = event.internal.get("client")
        if base is None:
            base = event.internal["client"] = _client_fields(event, event.pdu)
    else:
        base = _client_fields(event, prune_event_dict(event.pdu, event.room_version))
    out = dict(base)
    if include_room_id:
        out["room_id"] = event.room_id
    now = now or int(time.time() * 1000)
    unsigned: dict[str, Any] = {"age": max(0, now - base["origin_server_ts"])}
    stored_unsigned = event.internal.get("unsigned")
    if stored_unsigned:
        unsigned.update(stored_unsigned)
    if requester_device and event.internal.get("txn_device") == requester_device:
        unsigned["transaction_id"] = event.internal.get("txn_id")
    if redaction is not None:
        unsigned["redacted_because"] = serialize_event(redaction, None, None, now, include_room_id)
    if relations is not None:
        unsigned["m.relations"] = relations
    out["unsigned"] = unsigned
    return out


def bundled_form(event: Event, relations: dict[str, Any] | None = None) -> dict[str, Any]:
    """An event as bundled inside another's aggregations (an edit, a thread's latest
    event): the client form without `age` or `transaction_id`, so that the bundle is the
    same for every recipient and can be kept as bytes."""
    base = event.internal.get("client")
    if base is None:
        base = event.internal["client"] = _client_fields(event, event.pdu)
    out = dict(base, room_id=event.room_id)
    unsigned = dict(event.internal.get("unsigned") or {})
    if relations:
        unsigned["m.relations"] = relations
    out["unsigned"] = unsigned
    return out


def client_fragment(event: Event, now: int, relations: bytes | None = None) -> orjson.Fragment | None:
    """The event's client form (without room_id, as /sync sends it) as ready-made JSON
    bytes: built once per event, then reused for every recipient with only `age` (and the
    bundled aggregations' bytes, `relations`, if any) filled in. None when the cached form
    does not apply (the caller serializes normally)."""
    parts = event.internal.get("fragment")
    if parts is None:
        base = event.internal.get("client") or _client_fields(event, event.pdu)
        event.internal["client"] = base
        try:
            body = orjson.dumps(base)
            rest = orjson.dumps(event.internal.get("unsigned") or {})
        except TypeError:  # not representable by orjson (lone surrogates): no fast path
            event.internal["fragment"] = False
            return None
        parts = (body[:-1] + b',"unsigned":{"age":', (b"," + rest[1:-1] if len(rest) > 2 else b"") + b"}}")
        event.internal["fragment"] = parts
    elif parts is False:
        return None
    age = max(0, now - event.pdu.get("origin_server_ts", 0))
    if relations is not None:
        return orjson.Fragment(parts[0] + str(age).encode() + b',"m.relations":' + relations + parts[1])
    return orjson.Fragment(parts[0] + str(age).encode() + parts[1])
