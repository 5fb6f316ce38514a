"""Regression tests for problems found in review: redactions through /send, events of
other rooms, the federation event format, past members' view of the member list, and
transaction id limits."""
from __future__ import annotations

from urllib.parse import quote

V3 = "/_matrix/client/v3"


def _pair(server, http, unique):
    a = http.register(unique("a"))
    b = http.register(unique("b"))
    A = type(http)(server.base_url, a["access_token"])
    B = type(http)(server.base_url, b["access_token"])
    _, room = A.request("POST", f"{V3}/createRoom", {"preset": "public_chat"})
    assert B.request("POST", f"{V3}/rooms/{room['room_id']}/join", {})[0] == 200
    return A, B, a, b, room["room_id"]


def test_redaction_sent_as_plain_event_is_checked(server, http, unique):
    A, B, a, b, room_id = _pair(server, http, unique)
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


def test_no_redacting_events_of_another_room(server, http, unique):
    A, B, a, b, room_id = _pair(server, http, unique)
    _, other = A.request("POST", f"{V3}/createRoom", {})
    _, msg = A.request("PUT", f"{V3}/rooms/{other['room_id']}/send/m.room.message/m1", {"msgtype": "m.text", "body": "x"})
    # B, powerless, redacts from a room of B's own: the target is elsewhere
    _, b_room = B.request("POST", f"{V3}/createRoom", {})
    status, _ = B.request("PUT", f"{V3}/rooms/{b_room['room_id']}/redact/{msg['event_id']}/t1", {})
    assert status == 400
    _, ev = A.request("GET", f"{V3}/rooms/{other['room_id']}/event/{msg['event_id']}")
    assert ev["content"]["body"] == "x"


def test_federation_format_serves_redacted_form(server, http, unique):
    A, B, a, b, room_id = _pair(server, http, unique)
    _, msg = B.request("PUT", f"{V3}/rooms/{room_id}/send/m.room.message/m1", {"msgtype": "m.text", "body": "secret"})
    assert A.request("PUT", f"{V3}/rooms/{room_id}/redact/{msg['event_id']}/r1", {})[0] == 200
    filt = quote('{"event_format":"federation","room":{"timeline":{"limit":50}}}')
    _, sync = B.request("GET", f"{V3}/sync?timeout=0&filter={filt}")
    events = sync["rooms"]["join"][room_id]["timeline"]["events"]
    redacted = [e for e in events if e["event_id"] == msg["event_id"]][0]
    assert redacted["content"] == {}


def test_past_member_cannot_see_members_after_leaving(server, http, unique):
    A, B, a, b, room_id = _pair(server, http, unique)
    assert B.request("POST", f"{V3}/rooms/{room_id}/leave", {})[0] == 200
    c = http.register(unique("c"))
    C = type(http)(server.base_url, c["access_token"])
    assert C.request("POST", f"{V3}/rooms/{room_id}/join", {})[0] == 200
    for path in (f"{V3}/rooms/{room_id}/members", f"{V3}/rooms/{room_id}/members?at=s999999999"):
        status, members = B.request("GET", path)
        assert status == 200
        assert c["user_id"] not in {e["state_key"] for e in members["chunk"]}


def test_transaction_ids_are_bounded(server, http, unique):
    A, B, a, b, room_id = _pair(server, http, unique)
    status, body = A.request("PUT", f"{V3}/rooms/{room_id}/send/m.room.message/{'t' * 300}",
                             {"msgtype": "m.text", "body": "x"})
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    status, _ = A.request("PUT", f"{V3}/sendToDevice/m.test/{'t' * 300}", {"messages": {}})
    assert status == 400
    # and the room still works for everyone
    assert B.request("PUT", f"{V3}/rooms/{room_id}/send/m.room.message/ok", {"msgtype": "m.text", "body": "y"})[0] == 200
