"""Reporting content to the server's moderators: an event (the reporter must be joined to
its room and able to see it), a room (no membership needed), or a user. Reports are
stored (storage/reports.py); what is reported but does not exist for the reporter
(missing, hidden by history visibility, or another tenant's) answers 404 M_NOT_FOUND
alike, so a report reveals nothing."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from homeserver import visibility
from homeserver.errors import MatrixError, bad_json, not_found
from homeserver.ids import is_valid_room_id, is_valid_user_id
from homeserver.room_heads import RoomHead
from storage import accounts as accounts_store
from storage import reports as reports_store
from storage.reports import Report

if TYPE_CHECKING:
    from homeserver.server import HomeServer

MAX_REASON_LENGTH = 10_000
MIN_SCORE, MAX_SCORE = -100, 0  # the score clients sent before spec v1.18 dropped it


def _reason(body: dict[str, Any], required: bool) -> str | None:
    reason = body.get("reason")
    if reason is None:
        if required:
            raise MatrixError(400, "M_MISSING_PARAM", "reason is required (it may be empty)")
        return None
    if not isinstance(reason, str):
        raise bad_json("reason must be a string")
    if len(reason) > MAX_REASON_LENGTH or "\x00" in reason:
        raise MatrixError(400, "M_INVALID_PARAM",
                          f"reason must be at most {MAX_REASON_LENGTH} characters, without NUL")
    return reason


def _score(body: dict[str, Any]) -> int | None:
    score = body.get("score")
    if score is None:
        return None
    if type(score) is not int:
        raise bad_json("score must be an integer")
    if not MIN_SCORE <= score <= MAX_SCORE:
        raise MatrixError(400, "M_INVALID_PARAM", f"score must be between {MIN_SCORE} and {MAX_SCORE}")
    return score


def _plain_id(value: str) -> bool:
    return "\x00" not in value and len(value.encode("utf-8", "surrogatepass")) <= 255


async def _room_of_tenant(hs: "HomeServer", user_id: str, room_id: str) -> RoomHead | None:
    if not (is_valid_room_id(room_id) and _plain_id(room_id)):
        return None
    return await hs.tenancy.head_for(user_id, room_id)


async def _store(hs: "HomeServer", report: Report) -> None:
    await hs.db.run(reports_store.add_report, report)


def _now() -> int:
    return int(time.time() * 1000)


async def report_event(hs: "HomeServer", user_id: str, room_id: str, event_id: str,
                       body: dict[str, Any]) -> None:
    reason, score = _reason(body, required=False), _score(body)
    missing = not_found("the event was not found or you are not joined to the room")
    head = await _room_of_tenant(hs, user_id, room_id)
    if head is None or head.membership_of(user_id) != "join":
        raise missing
    event = await hs.event_cache.get(event_id) if event_id.startswith("$") and _plain_id(event_id) else None
    if event is None or event.room_id != room_id:
        raise missing
    history = await visibility.load_history(hs, room_id, user_id)
    if not history.may_see(event):
        raise missing
    await _store(hs, Report("event", _now(), user_id, room_id=room_id, event_id=event_id,
                            target_user_id=event.sender, reason=reason, score=score))


async def report_room(hs: "HomeServer", user_id: str, room_id: str, body: dict[str, Any]) -> None:
    reason = _reason(body, required=True)
    if await _room_of_tenant(hs, user_id, room_id) is None:
        raise not_found("the room was not found")
    await _store(hs, Report("room", _now(), user_id, room_id=room_id, reason=reason))


async def report_user(hs: "HomeServer", user_id: str, target: str, body: dict[str, Any]) -> None:
    reason = _reason(body, required=True)
    missing = not_found("the user was not found")
    if not (is_valid_user_id(target) and _plain_id(target)):
        raise missing
    if hs.accounts.is_mine(target) and not await hs.db.run(accounts_store.user_exists, target):
        raise missing
    if not await hs.tenancy.same_tenant(user_id, target):
        raise missing
    await _store(hs, Report("user", _now(), user_id, target_user_id=target, reason=reason))
