"""Sliding sync end to end with matrix-js-sdk's own MSC4186 client: its `SlidingSync` class
and `SlidingSyncSdk` loop (started by `startClient({slidingSync})`), with rust crypto so
the e2ee and to_device extensions are in use. The script is tests/js/sliding_sync_check.mjs:
first window, scrolling, a room subscription with a full timeline, then a message that
bumps the bottom room, an invite, typing, a receipt, a to-device message and a new device
of the peer, each seen through the SDK."""
from __future__ import annotations

import json
import uuid
from urllib.parse import quote

from tests.server_harness import Http
from tests.test_js_sdk import _assert_clean, _ensure_npm_deps, _result, _Script, JS_DIR

SCRIPT = JS_DIR / "sliding_sync_check.mjs"
V3 = "/_matrix/client/v3"


def test_js_sdk_sliding_sync(server, http, unique, tmp_path):
    node = _ensure_npm_deps()
    name_a = unique("ssa")
    a_reg, b_reg = http.register(name_a), http.register(unique("ssb"))
    ha, hb = Http(server.base_url, a_reg["access_token"]), Http(server.base_url, b_reg["access_token"])
    peer = b_reg["user_id"]
    rooms = []
    for i in range(8):
        status, body = ha.request("POST", V3 + "/createRoom", {"name": f"js room {i}", "invite": [peer]})
        assert status == 200, body
        rooms.append(body["room_id"])
        assert hb.request("POST", f"{V3}/rooms/{quote(body['room_id'])}/join", {})[0] == 200
    receipt_event = None
    for i, room_id in enumerate(rooms):
        status, body = ha.request("PUT", f"{V3}/rooms/{quote(room_id)}/send/m.room.message/{uuid.uuid4().hex}",
                                  {"msgtype": "m.text", "body": f"message {i}"})
        assert status == 200, body
        if i == 0:
            receipt_event = body["event_id"]
    newest_first = rooms[::-1]
    bottom = rooms[0]
    config = {"baseUrl": server.base_url, "user": name_a, "password": "secret-pw", "peer": peer,
              "roomsNewestFirst": newest_first, "bottomRoom": bottom, "receiptEventId": receipt_event,
              "timeoutMs": 30_000}
    log_path = server.data_dir / "server.log"
    log_start = log_path.stat().st_size
    script = _Script(node, config, tmp_path / "sliding_sync_check.stderr", SCRIPT)
    try:
        ready = script.wait_line("READY", timeout=90)
        assert ready is not None, f"the SDK never got through its first steps:\n{script.lines}\n{script.stderr()}"
        device_id = json.loads(ready)["deviceId"]
        assert hb.request("PUT", f"{V3}/rooms/{quote(bottom)}/send/m.room.message/{uuid.uuid4().hex}",
                          {"msgtype": "m.text", "body": "bump the bottom room"})[0] == 200
        assert hb.request("POST", f"{V3}/rooms/{quote(bottom)}/receipt/m.read/{quote(receipt_event)}", {})[0] == 200
        assert hb.request("PUT", f"{V3}/rooms/{quote(bottom)}/typing/{quote(peer)}",
                          {"typing": True, "timeout": 30_000})[0] == 200
        assert hb.request("PUT", f"{V3}/sendToDevice/org.example.ping/{uuid.uuid4().hex}",
                          {"messages": {a_reg["user_id"]: {device_id: {"hello": "device"}}}})[0] == 200
        status, body = hb.request("POST", V3 + "/createRoom", {"name": "invite for a",
                                                              "invite": [a_reg["user_id"]]})
        assert status == 200, body
        invited_room = body["room_id"]
        status, body = Http(server.base_url).request("POST", V3 + "/login", {
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": peer},
            "password": "secret-pw"})
        assert status == 200, body
        result = _result(script, timeout=90)
    finally:
        script.close()

    assert result["firstWindow"] == sorted(newest_first[:5])
    assert result["firstCount"] == 8
    assert result["events"]["scrolled"]["rooms"] == 8
    assert result["events"]["subscribed"]["events"] > 5  # create, members, state, message
    assert result["events"]["message"]["body"] == "bump the bottom room"
    assert result["events"]["invite"]["roomId"] == invited_room
    to_device = result["events"]["toDevice"]
    assert (to_device["sender"], to_device["content"]) == (peer, {"hello": "device"})
    assert result["events"]["bumped"]["after"] > (result["events"]["bumped"]["before"] or 0)
    assert {"e2ee", "to_device", "account_data", "typing", "receipts"} <= set(result["extensions"])
    assert result["listCounts"][-1] == 9  # the invite joined the list
    _assert_clean(result, log_path, log_start)
