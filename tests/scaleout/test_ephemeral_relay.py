"""Typing, read receipts and presence are kept by the stream owner (`worker.streams`);
application services that receive ephemeral data get them from whichever process runs
the `appservices` job. When that is another process, the owner relays them through a
table (homeserver/ephemeral_relay.py)."""
from __future__ import annotations

import secrets
import time
import urllib.parse

import yaml

from tests.appservice.test_transactions import Receiver
from tests.cluster import Cluster
from tests.server_harness import pair_in_room


def _ephemeral(receiver: Receiver) -> list[dict]:
    with receiver.lock:
        return [e for _, body in receiver.accepted for e in body.get("ephemeral", [])]


def _wait_for(receiver: Receiver, found, within: float = 20.0) -> list[dict]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        events = _ephemeral(receiver)
        if found(events):
            return events
        time.sleep(0.2)
    raise AssertionError(f"not delivered within {within} s; ephemeral so far: {_ephemeral(receiver)}")


def test_ephemeral_data_reaches_the_appservices_job_on_another_process(tmp_path, unique):
    hs_token = secrets.token_hex(16)
    receiver = Receiver(hs_token)
    registration = {"id": "watch", "url": f"http://127.0.0.1:{receiver.port}", "as_token": secrets.token_hex(16),
                    "hs_token": hs_token, "sender_localpart": "_watch_bot", "receive_ephemeral": True,
                    "namespaces": {"users": [{"exclusive": False, "regex": "@eph.*"}], "aliases": [],
                                   "rooms": []}}
    reg_path = tmp_path / "watch.yaml"
    reg_path.write_text(yaml.safe_dump(registration))
    cluster = Cluster(tmp_path / "c", extra_config="  jobs:\n    appservices: client1\n"
                                                   f"app_service_config_files: [{reg_path}]\n")
    try:
        cluster.start()
        # Written through the client process, which forwards them to the stream owner.
        alice, bob, room_id = pair_in_room(cluster.url(cluster.clients[0]), unique("eph-a"), unique("eph-b"))
        room = urllib.parse.quote(room_id)
        status, body = alice.request("PUT", f"/_matrix/client/v3/rooms/{room}/typing/"
                                            f"{urllib.parse.quote(alice.user_id)}", {"typing": True, "timeout": 30000})
        assert status == 200, body
        events = _wait_for(receiver, lambda evs: any(
            e["type"] == "m.typing" and e.get("room_id") == room_id and alice.user_id in e["content"]["user_ids"]
            for e in evs))

        status, sent = alice.request("PUT", f"/_matrix/client/v3/rooms/{room}/send/m.room.message/{unique('t')}",
                                     {"msgtype": "m.text", "body": "read me"})
        assert status == 200, sent
        status, body = bob.request("POST", f"/_matrix/client/v3/rooms/{room}/receipt/m.read/"
                                           f"{urllib.parse.quote(sent['event_id'])}", {})
        assert status == 200, body
        events = _wait_for(receiver, lambda evs: any(
            e["type"] == "m.receipt" and e.get("room_id") == room_id
            and bob.user_id in e["content"].get(sent["event_id"], {}).get("m.read", {}) for e in evs))

        status, body = bob.request("PUT", f"/_matrix/client/v3/presence/{urllib.parse.quote(bob.user_id)}/status",
                                   {"presence": "unavailable", "status_msg": "in a meeting"})
        assert status == 200, body
        events = _wait_for(receiver, lambda evs: any(
            e["type"] == "m.presence" and e.get("sender") == bob.user_id
            and e["content"].get("status_msg") == "in a meeting" for e in evs))

        # Each relayed once: the owner does not push them itself, and nothing is read twice.
        typing = [e for e in events if e["type"] == "m.typing" and alice.user_id in e["content"]["user_ids"]]
        assert len(typing) == 1, typing
        with receiver.lock:
            ids = [t for t, _ in receiver.attempts]
        assert len(ids) == len(set(ids)), "a transaction was sent twice"

        # The job's process restarted: it goes on from the newest position.
        cluster.procs[cluster.clients[0]].stop()
        cluster.restart(cluster.clients[0])
        status, body = bob.request("PUT", f"/_matrix/client/v3/rooms/{room}/typing/"
                                          f"{urllib.parse.quote(bob.user_id)}", {"typing": True, "timeout": 30000})
        assert status == 200, body
        _wait_for(receiver, lambda evs: any(
            e["type"] == "m.typing" and e.get("room_id") == room_id and bob.user_id in e["content"]["user_ids"]
            for e in evs))
    finally:
        cluster.stop()
        receiver.close()
