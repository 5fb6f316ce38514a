"""matrix-js-sdk (its own sync loop, tests/js/unread_check.mjs) reads the server's unread
counts: room.getUnreadNotificationCount() climbs for the other member and resets on the
SDK's read receipt, a mention highlights, a muted room stays at zero, a thread is counted
apart and reset by the SDK's threaded receipt. And the SDK's own retry of 429s gets a
burst of messages through, each once. The Node harness is tests/test_js_sdk.py's."""
from __future__ import annotations

import json
import time
import urllib.parse
from pathlib import Path

import pytest

from tests.server_harness import Http, ServerProcess
from tests.test_js_sdk import JS_DIR, _ensure_npm_deps, _Script

V3 = "/_matrix/client/v3"
SCRIPT = JS_DIR / "unread_check.mjs"


def _next(script: _Script, seen: int, timeout: float = 60) -> tuple[str, int]:
    """The first output line after the first `seen` ones (and the new count)."""
    deadline = time.monotonic() + timeout
    with script.cond:
        while len(script.lines) <= seen:
            left = deadline - time.monotonic()
            if left <= 0 or script.eof:
                raise AssertionError(f"no answer from the script:\n{script.lines}\n{script.stderr()}")
            script.cond.wait(min(left, 0.5))
        return script.lines[seen], seen + 1


class Driver:
    def __init__(self, node: Path, base_url: str, user: str, tmp_path: Path) -> None:
        self.script = _Script(node, {"baseUrl": base_url, "user": user, "password": "secret-pw",
                                     "timeoutMs": 20_000}, tmp_path / "unread_check.stderr", SCRIPT)
        assert self.script.wait_line("READY", 60) is not None, self.script.stderr()
        self.seen = len(self.script.lines)

    def ask(self, **cmd) -> str:
        self.script.command(cmd)
        line, self.seen = _next(self.script, self.seen)
        return line

    def wait_counts(self, room: str, total: int, highlight: int, **thread) -> None:
        line = self.ask(cmd="wait", roomId=room, total=total, highlight=highlight, **thread)
        assert line.startswith("OK "), f"{line} wanted total={total} highlight={highlight} {thread}"

    def close(self) -> dict:
        self.script.command({"cmd": "quit"})
        result = self.script.wait_line("RESULT", 30)
        self.script.close()
        return json.loads(result) if result else {}


def _send(h: Http, room: str, txn: str, body: str, **content) -> str:
    status, resp = h.request("PUT", f"{V3}/rooms/{room}/send/m.room.message/{txn}",
                             {"msgtype": "m.text", "body": body, **content})
    assert status == 200, resp
    return resp["event_id"]


def test_js_sdk_unread_counts(server, http, unique, tmp_path):
    node = _ensure_npm_deps()
    a_reg, b_reg = http.register(unique("jna")), http.register(unique("jnb"))
    a, b = Http(server.base_url, a_reg["access_token"]), Http(server.base_url, b_reg["access_token"])
    rooms = []
    for _ in range(2):
        status, room = a.request("POST", f"{V3}/createRoom", {"invite": [b_reg["user_id"]]})
        assert status == 200
        assert b.request("POST", f"{V3}/rooms/{room['room_id']}/join", {})[0] == 200
        rooms.append(room["room_id"])
    room, muted = rooms
    rule = {"conditions": [{"kind": "event_match", "key": "room_id", "pattern": muted}], "actions": []}
    assert b.request("PUT", f"{V3}/pushrules/global/override/{urllib.parse.quote(muted)}", rule)[0] == 200
    driver = Driver(node, server.base_url, b_reg["user_id"], tmp_path)
    try:
        driver.wait_counts(room, 0, 0)
        _send(a, room, "j1", "one")
        _send(a, room, "j2", "two")
        driver.wait_counts(room, 2, 0)
        mention = _send(a, room, "j3", "hey", **{"m.mentions": {"user_ids": [b_reg["user_id"]]}})
        driver.wait_counts(room, 3, 1)
        _send(a, muted, "j4", "muted")
        _send(a, muted, "j5", "muted mention", **{"m.mentions": {"user_ids": [b_reg["user_id"]]}})
        assert driver.ask(cmd="read", roomId=room, eventId=mention) == "DONE"
        driver.wait_counts(room, 0, 0)
        driver.wait_counts(muted, 0, 0)
        # A thread: counted apart from the main timeline, reset by a threaded receipt.
        root = _send(a, room, "j6", "root")
        thread = {"m.relates_to": {"rel_type": "m.thread", "event_id": root}}
        _send(a, room, "j7", "reply 1", **thread)
        reply2 = _send(a, room, "j8", "reply 2", **thread)
        driver.wait_counts(room, 3, 0, threadId=root, threadTotal=2)
        assert driver.ask(cmd="read", roomId=room, eventId=reply2, threadId=root) == "DONE"
        driver.wait_counts(room, 1, 0, threadId=root, threadTotal=0)  # the root is still unread
    finally:
        result = driver.close()
    assert result.get("ok"), result


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory):
    srv = ServerProcess(tmp_path_factory.mktemp("jsrl"),
                        extra_config="rc_message: {per_second: 5, burst_count: 3}\n")
    srv.start()
    yield srv
    srv.stop()
    srv.stop_postgres()


def test_js_sdk_retries_429_until_every_message_is_sent(limited_server, unique, tmp_path):
    node = _ensure_npm_deps()
    srv = limited_server
    reg = Http(srv.base_url).register(unique("jsr"))
    h = Http(srv.base_url, reg["access_token"])
    status, room = h.request("POST", f"{V3}/createRoom", {})
    assert status == 200
    driver = Driver(node, srv.base_url, reg["user_id"], tmp_path)
    try:
        line = driver.ask(cmd="send", roomId=room["room_id"], count=12, prefix="burst ")
    finally:
        result = driver.close()
    assert line.startswith("SENT "), line
    ids = json.loads(line[5:])
    assert len(set(ids)) == 12
    assert result["statuses"].get("429", 0) >= 1, result  # the limit was met, and retried
    _, page = h.request("GET", f"{V3}/rooms/{room['room_id']}/messages?dir=b&limit=50")
    bodies = sorted(e["content"]["body"] for e in page["chunk"] if e["type"] == "m.room.message")
    assert bodies == sorted(f"burst {i}" for i in range(12))  # each once
