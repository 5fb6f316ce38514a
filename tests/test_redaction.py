"""Redactions through every path a client can take: an m.room.redaction sent with /send
or /state is checked like one sent with /redact (power, a real target), a redaction
cannot reach an event of another room, and a redacted event is served redacted in every
event format (the federation format too)."""
from __future__ import annotations

from urllib.parse import quote

from tests.server_harness import Http, new_user
from tests.tenant_world import joined_room

V3 = "/_matrix/client/v3"


def _pair(server, unique) -> tuple[Http, Http, str]:
    """A's public room, with B (no power) joined."""
    A, B = new_user(server.base_url, unique("a")), new_user(server.base_url, unique("b"))
    return A, B, joined_room(A, B, invite=False, preset="public_chat")


def test_redaction_sent_as_plain_event_is_checked(server, unique):
    A, B, room_id = _pair(server, unique)
    _, admin_msg = A.request("PUT", f"{V3}/rooms/{room_id}/send/m.room.message/m1", {"msgtype": "m.text", "body": "keep"})
    status, body = B.request("PUT", f"{V3}/rooms/{room_id}/send/m.room.redaction/r1", {"redacts": admin_msg["event_id"]})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, _ = B.request("PUT", f"{V3}/rooms/{room_id}/state/m.room.redaction/x", {"redacts": admin_msg["event_id"]})
    assert status == 403
    _, ev = A.request("GET", f"{V3}/rooms/{room_id}/event/{admin_msg['event_id']}")
    assert ev["content"] == {"msgtype": "m.text", "body": "keep"}
    # garbage targets are refused instead of stored
    status, body = A.request("PUT", f"{V3}/rooms/{room_id}/send/m.room.redaction/r2", {"redacts": "x" * 9000})
    assert status == 400


def test_no_redacting_events_of_another_room(server, unique):
    A, B, room_id = _pair(server, unique)
    _, other = A.request("POST", f"{V3}/createRoom", {})
    _, msg = A.request("PUT", f"{V3}/rooms/{other['room_id']}/send/m.room.message/m1", {"msgtype": "m.text", "body": "x"})
    # B, powerless, redacts from a room of B's own: the target is elsewhere
    _, b_room = B.request("POST", f"{V3}/createRoom", {})
    status, _ = B.request("PUT", f"{V3}/rooms/{b_room['room_id']}/redact/{msg['event_id']}/t1", {})
    assert status == 400
    _, ev = A.request("GET", f"{V3}/rooms/{other['room_id']}/event/{msg['event_id']}")
    assert ev["content"]["body"] == "x"


def test_federation_format_serves_redacted_form(server, unique):
    A, B, room_id = _pair(server, unique)
    _, msg = B.request("PUT", f"{V3}/rooms/{room_id}/send/m.room.message/m1", {"msgtype": "m.text", "body": "secret"})
    assert A.request("PUT", f"{V3}/rooms/{room_id}/redact/{msg['event_id']}/r1", {})[0] == 200
    filt = quote('{"event_format":"federation","room":{"timeline":{"limit":50}}}')
    _, sync = B.request("GET", f"{V3}/sync?timeout=0&filter={filt}")
    events = sync["rooms"]["join"][room_id]["timeline"]["events"]
    redacted = [e for e in events if e["event_id"] == msg["event_id"]][0]
    assert redacted["content"] == {}
