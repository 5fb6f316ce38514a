"""Application-service transactions as frameworks see them: ids are decimal digits, strictly
increasing and never repeated (across a restart too), a retry keeps its id and content,
and a receiver that drops ids it has already seen (as matrix-bot-sdk does) loses no
typing update. Also: a registration written by matrix-appservice-bridge
(`de.sorunome.msc2409.push_ephemeral`) gets ephemeral data."""
from __future__ import annotations

import secrets
import threading
import time

import pytest
import yaml

from tests.json_receiver import Call, JsonReceiver
from tests.server_harness import Http, ServerProcess

V3 = "/_matrix/client/v3"


class Receiver:
    """A tiny application service. Like matrix-bot-sdk it remembers transaction ids and
    acknowledges a repeated id without processing it again."""

    def __init__(self, hs_token: str) -> None:
        self.lock = threading.Lock()
        self.attempts: list[tuple[str, dict]] = []   # every PUT, in arrival order
        self.accepted: list[tuple[str, dict]] = []   # first sighting of each id
        self.fail_once_marker: str | None = None     # answer 500 once to a txn with this body
        self._failed: set[str] = set()
        self._hs_token = hs_token
        self._http = JsonReceiver(self._answer).start()
        self.port = self._http.port

    def _answer(self, call: Call) -> tuple[int, dict]:
        prefix = "/_matrix/app/v1/transactions/"
        if call.method != "PUT":
            return 404, {"errcode": "M_UNRECOGNIZED"}
        if not call.bears(self._hs_token):
            return 403, {"errcode": "M_FORBIDDEN"}
        if not call.path.startswith(prefix):
            return 404, {"errcode": "M_UNRECOGNIZED"}
        txn_id, body = call.path[len(prefix):], call.body
        with self.lock:
            self.attempts.append((txn_id, body))
            marker = self.fail_once_marker
            bodies = [e.get("content", {}).get("body") for e in body.get("events", [])]
            if marker is not None and marker in bodies and txn_id not in self._failed:
                self._failed.add(txn_id)
                return 500, {"errcode": "M_UNKNOWN"}
            if txn_id not in {t for t, _ in self.accepted}:
                self.accepted.append((txn_id, body))
        return 200, {}

    def typing_states(self, room_id: str) -> list[list[str]]:
        with self.lock:
            return [e["content"]["user_ids"] for _, body in self.accepted
                    for e in body.get("ephemeral", []) if e["type"] == "m.typing" and e["room_id"] == room_id]

    def event_ids(self) -> list[str]:
        with self.lock:
            return [e["event_id"] for _, body in self.accepted for e in body.get("events", [])]

    def close(self) -> None:
        self._http.close()


def _registration(as_id: str, url: str, prefix: str, ephemeral_key: str) -> dict:
    return {"id": as_id, "url": url, "as_token": secrets.token_hex(16), "hs_token": secrets.token_hex(16),
            "sender_localpart": f"{prefix}bot", ephemeral_key: True,
            "namespaces": {"users": [{"exclusive": True, "regex": f"@{prefix}.*"}], "aliases": [], "rooms": []}}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("astxn")
    tokens = {k: secrets.token_hex(16) for k in ("txn", "bridge")}
    txn_rx, bridge_rx = Receiver(tokens["txn"]), Receiver(tokens["bridge"])
    txn_reg = _registration("txn", f"http://127.0.0.1:{txn_rx.port}", "_tx_", "receive_ephemeral")
    # What matrix-appservice-bridge writes: only the unstable MSC2409 key.
    bridge_reg = _registration("bridge", f"http://127.0.0.1:{bridge_rx.port}", "_br_",
                               "de.sorunome.msc2409.push_ephemeral")
    txn_reg["hs_token"], bridge_reg["hs_token"] = tokens["txn"], tokens["bridge"]
    (d / "txn.yaml").write_text(yaml.safe_dump(txn_reg))
    (d / "bridge.yaml").write_text(yaml.safe_dump(bridge_reg))
    srv = ServerProcess(d / "hs", extra_config=f"app_service_config_files: [{d / 'txn.yaml'}, {d / 'bridge.yaml'}]\n")
    srv.start()
    yield srv, (txn_reg, txn_rx), (bridge_reg, bridge_rx)
    txn_rx.close()
    bridge_rx.close()
    srv.stop()
    srv.stop_postgres()


def _room_with_bot(srv: ServerProcess, reg: dict, name: str) -> tuple[Http, dict, str]:
    human = Http(srv.base_url)
    me = human.register(name)
    human.token = me["access_token"]
    bot_id = f"@{reg['sender_localpart']}:test.local"
    status, room = human.request("POST", f"{V3}/createRoom", {"invite": [bot_id]})
    assert status == 200, room
    status, body = Http(srv.base_url, reg["as_token"]).request("POST", f"{V3}/rooms/{room['room_id']}/join", {})
    assert status == 200, body
    return human, me, room["room_id"]


def _wait(predicate, timeout: float = 15) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _assert_ids_sound(ids: list[str]) -> None:
    assert ids and all(i.isascii() and i.isdigit() for i in ids), ids
    numbers = [int(i) for i in ids]
    assert numbers == sorted(set(numbers)), f"ids not strictly increasing: {ids}"


def test_ids_are_increasing_digits_and_no_typing_update_is_lost_across_a_restart(setup):
    srv, (reg, rx), _ = setup
    human, me, room_id = _room_with_bot(srv, reg, "typist")
    expected: list[list[str]] = []
    for i in range(16):
        typing = i % 2 == 0
        status, _ = human.request("PUT", f"{V3}/rooms/{room_id}/typing/{me['user_id']}",
                                  {"typing": typing, "timeout": 30000})
        assert status == 200
        expected.append([me["user_id"]] if typing else [])
        if i == 7:  # events and ephemeral data share one counter
            human.request("PUT", f"{V3}/rooms/{room_id}/send/m.room.message/mid", {"msgtype": "m.text", "body": "mid"})
        time.sleep(0.03)
    assert _wait(lambda: len(rx.typing_states(room_id)) >= 16), rx.typing_states(room_id)
    assert rx.typing_states(room_id) == expected
    before_restart = [t for t, _ in rx.attempts]
    _assert_ids_sound(before_restart)

    srv.stop()
    srv.start()
    _, sent = human.request("PUT", f"{V3}/rooms/{room_id}/send/m.room.message/after", {"msgtype": "m.text", "body": "after"})
    human.request("PUT", f"{V3}/rooms/{room_id}/typing/{me['user_id']}", {"typing": True, "timeout": 30000})
    assert _wait(lambda: sent["event_id"] in rx.event_ids() and len(rx.typing_states(room_id)) == 17)
    all_ids = [t for t, _ in rx.attempts]
    _assert_ids_sound(all_ids)
    assert int(all_ids[-1]) > max(int(i) for i in before_restart)


def test_a_retried_transaction_keeps_its_id_and_content(setup):
    srv, (reg, rx), _ = setup
    human, _, room_id = _room_with_bot(srv, reg, "retrier")
    rx.fail_once_marker = "fail-once"
    try:
        _, sent = human.request("PUT", f"{V3}/rooms/{room_id}/send/m.room.message/f1",
                                {"msgtype": "m.text", "body": "fail-once"})
        assert _wait(lambda: sent["event_id"] in rx.event_ids())
    finally:
        rx.fail_once_marker = None
    with rx.lock:
        tries = [(t, b) for t, b in rx.attempts
                 if any(e["event_id"] == sent["event_id"] for e in b.get("events", []))]
    assert len(tries) == 2, tries  # refused once, then accepted
    (first_id, first), (retry_id, retry) = tries
    assert first_id == retry_id
    assert [e["event_id"] for e in first["events"]] == [e["event_id"] for e in retry["events"]]
    # Apart from that retry, no id was ever sent twice.
    _assert_ids_sound(list(dict.fromkeys(t for t, _ in rx.attempts)))


def test_unstable_push_ephemeral_key_enables_ephemeral_data(setup):
    srv, _, (reg, rx) = setup
    human, me, room_id = _room_with_bot(srv, reg, "bridged")
    human.request("PUT", f"{V3}/rooms/{room_id}/typing/{me['user_id']}", {"typing": True, "timeout": 30000})
    _, sent = human.request("PUT", f"{V3}/rooms/{room_id}/send/m.room.message/b1", {"msgtype": "m.text", "body": "x"})
    human.request("POST", f"{V3}/rooms/{room_id}/receipt/m.read/{sent['event_id']}", {})
    assert _wait(lambda: any(me["user_id"] in s for s in rx.typing_states(room_id)))
    assert _wait(lambda: any(e["type"] == "m.receipt" and e["room_id"] == room_id
                             for _, b in list(rx.accepted) for e in b.get("ephemeral", [])))
