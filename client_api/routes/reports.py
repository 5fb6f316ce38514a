"""Reporting content: an event, a room or a user."""
from __future__ import annotations

from client_api.http import Req, Router
from homeserver import reports


async def report_event(req: Req, room_id: str, event_id: str):
    await reports.report_event(req.hs, req.user_id, room_id, event_id, req.json(allow_empty=True))
    return {}


async def report_room(req: Req, room_id: str):
    await reports.report_room(req.hs, req.user_id, room_id, req.json())
    return {}


async def report_user(req: Req, user_id: str):
    await reports.report_user(req.hs, req.user_id, user_id, req.json())
    return {}


def register(router: Router) -> None:
    router.client("POST", "/rooms/{room_id}/report/{event_id}", report_event)
    router.client("POST", "/rooms/{room_id}/report", report_room)
    router.client("POST", "/users/{user_id}/report", report_user)
