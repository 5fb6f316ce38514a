"""The body of a push-gateway request (push-gateway API, `notification`)."""
from __future__ import annotations

from typing import Any

from homeserver.event import Event
from homeserver.room_heads import RoomHead


def tweaks_of(actions: list) -> dict[str, Any]:
    tweaks: dict[str, Any] = {}
    for action in actions:
        if isinstance(action, dict) and isinstance(action.get("set_tweak"), str):
            tweak = action["set_tweak"]
            tweaks[tweak] = action.get("value", True) if tweak == "highlight" else action.get("value")
    return tweaks


def device(app_id: str, pushkey: str, pushkey_ts_ms: int, data: dict, tweaks: dict | None) -> dict:
    entry: dict[str, Any] = {"app_id": app_id, "pushkey": pushkey, "pushkey_ts": pushkey_ts_ms // 1000,
                             "data": {k: v for k, v in data.items() if k != "url"}}
    if tweaks is not None:
        entry["tweaks"] = tweaks
    return entry


def _state_str(head: RoomHead | None, key: tuple[str, str], field: str) -> str | None:
    ev = head.state.get(key) if head is not None else None
    value = ev.content.get(field) if ev is not None else None
    return value if isinstance(value, str) and value else None


def event_notification(event: Event, user_id: str, actions: list, unread: int, head: RoomHead | None,
                       devices: list[dict], event_id_only: bool, include_content: bool) -> dict:
    """What a gateway gets for one notified event; with `event_id_only` just the ids,
    the counts and the priority (the app fetches the rest itself)."""
    tweaks = tweaks_of(actions)
    prio = "high" if event.type == "m.room.encrypted" or tweaks.get("highlight") or tweaks.get("sound") \
        else "low"
    note: dict[str, Any] = {"event_id": event.event_id, "room_id": event.room_id,
                            "counts": {"unread": unread}, "prio": prio, "devices": devices}
    if event_id_only:
        return {"notification": note}
    note["type"] = event.type
    note["sender"] = event.sender
    sender_name = _state_str(head, ("m.room.member", event.sender), "displayname")
    if sender_name:
        note["sender_display_name"] = sender_name
    room_name = _state_str(head, ("m.room.name", ""), "name")
    if room_name:
        note["room_name"] = room_name
    alias = _state_str(head, ("m.room.canonical_alias", ""), "alias")
    if alias:
        note["room_alias"] = alias
    if event.type == "m.room.member":
        note["user_is_target"] = event.state_key == user_id
        note["membership"] = event.membership
    if include_content and not event.internal.get("redacted_by"):
        note["content"] = event.content
    return {"notification": note}


def badge_notification(unread: int, devices: list[dict]) -> dict:
    """A counts-only push: the app updates its badge after the user read elsewhere."""
    return {"notification": {"counts": {"unread": unread}, "prio": "low", "devices": devices}}
