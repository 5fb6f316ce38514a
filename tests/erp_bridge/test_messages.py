"""Messages both ways against a real homeserver and a real bridge process: ERP posts
(idempotent on txn_id), history, Matrix replies reaching the webhook, and delivery
through a bridge crash and a webhook outage."""
from __future__ import annotations

import threading
import time
from urllib.parse import quote

from tests.erp_bridge.harness import Env
from tests.server_harness import Http

SERVER = "test.local"


def setup_object(env: Env, unique, participants=("anna", "ben")):
    tenant = unique("t")
    status, t = env.erp.request("PUT", f"/_erp/v1/tenants/{tenant}", {"name": "ACME"})
    assert status == 200, t
    users = {}
    for name in participants:
        erp_id = unique(name)
        status, body = env.erp.request("PUT", f"/_erp/v1/users/{erp_id}",
                                       {"tenant_id": tenant, "display_name": name.title(), "active": True})
        assert status == 200, body
        users[name] = (erp_id, body["user_id"])
    order = unique("o")
    status, obj = env.erp.request("PUT", f"/_erp/v1/tenants/{tenant}/objects/order/{order}", {
        "tenant_id": tenant, "title": f"Order {order}",
        "participants": [erp_id for erp_id, _ in users.values()]})
    assert status == 200, obj
    return tenant, users, order, obj["room_id"]


def post(env: Env, tenant: str, order: str, body: dict, erp: Http | None = None):
    return (erp or env.erp).request("POST", f"/_erp/v1/tenants/{tenant}/objects/order/{order}/messages", body)


def room_messages(env: Env, room_id: str, tenant: str) -> list[dict]:
    """Every m.room.message in the room, oldest first, read as the tenant's bot."""
    out, token = [], None
    while True:
        path = f"/_matrix/client/v3/rooms/{quote(room_id)}/messages?dir=b&limit=100"
        if token:
            path += f"&from={quote(token)}"
        status, page = env.hs.as_user("GET", path, f"@_erp_bot_{tenant}:{SERVER}")
        assert status == 200, page
        out.extend(ev for ev in page["chunk"] if ev["type"] == "m.room.message")
        token = page.get("end")
        if not page["chunk"] or not token:
            return list(reversed(out))


def login(env: Env, erp_user_id: str) -> Http:
    status, tok = env.erp.request("POST", f"/_erp/v1/users/{erp_user_id}/login-token", {})
    assert status == 200, tok
    client = Http(env.server.base_url)
    status, body = client.request("POST", "/_matrix/client/v3/login",
                                  {"type": "m.login.token", "token": tok["login_token"]})
    assert status == 200, body
    client.token = body["access_token"]
    return client


def test_erp_post_is_idempotent_on_txn_id(env, unique):
    tenant, users, order, room = setup_object(env, unique)
    anna = users["anna"][0]
    status, first = post(env, tenant, order, {"sender": anna, "body": "Price confirmed", "txn_id": "m1"})
    assert status == 200, first
    status, again = post(env, tenant, order, {"sender": anna, "body": "Price confirmed", "txn_id": "m1"})
    assert status == 200 and again == first
    status, notice = post(env, tenant, order, {"body": "Order shipped", "txn_id": "m2"})
    assert status == 200
    status, conflict = post(env, tenant, order, {"sender": anna, "body": "Something else", "txn_id": "m1"})
    assert status == 409, conflict

    msgs = room_messages(env, room, tenant)
    assert [(m["sender"], m["content"]["msgtype"], m["content"]["body"]) for m in msgs] == [
        (users["anna"][1], "m.text", "Price confirmed"),
        (f"@_erp_bot_{tenant}:{SERVER}", "m.notice", "Order shipped"),
    ]
    assert msgs[0]["event_id"] == first["event_id"]

    # Posting is refused for strangers, non-participants and unknown objects.
    outsider = unique("x")
    env.erp.request("PUT", f"/_erp/v1/users/{outsider}",
                    {"tenant_id": tenant, "display_name": "X", "active": True})
    status, err = post(env, tenant, order, {"sender": outsider, "body": "hi", "txn_id": "m3"})
    assert status == 403, err
    status, err = post(env, tenant, order, {"sender": unique("ghost"), "body": "hi", "txn_id": "m4"})
    assert status == 404
    status, err = post(env, tenant, unique("nosuch"), {"body": "hi", "txn_id": "m5"})
    assert status == 404


def test_history_newest_first_with_pages(env, unique):
    tenant, users, order, room = setup_object(env, unique)
    anna = users["anna"][0]
    for i in range(7):
        status, _ = post(env, tenant, order, {"sender": anna, "body": f"msg {i}", "txn_id": f"h{i}"})
        assert status == 200
    seen, token = [], None
    for _ in range(10):
        path = f"/_erp/v1/tenants/{tenant}/objects/order/{order}/messages?limit=3"
        if token:
            path += f"&from={quote(token)}"
        status, page = env.erp.request("GET", path)
        assert status == 200, page
        seen.extend(page["chunk"])
        token = page["next_from"]
        if not token:
            break
    assert [m["body"] for m in seen] == [f"msg {i}" for i in reversed(range(7))]
    assert all(m["sender"] == anna and m["erp_txn_id"] for m in seen)
    status, err = env.erp.request("GET", f"/_erp/v1/tenants/{tenant}/objects/order/{order}/messages?limit=0")
    assert status == 400
    status, err = env.erp.request("GET", f"/_erp/v1/tenants/{tenant}/objects/order/{order}/messages?limit=abc")
    assert status == 400


def test_matrix_reply_reaches_webhook(env, unique):
    tenant, users, order, room = setup_object(env, unique)
    ben_erp, ben_mxid = users["ben"]
    status, _ = post(env, tenant, order, {"sender": users["anna"][0], "body": "Can you confirm?", "txn_id": "q1"})
    assert status == 200
    ben = login(env, ben_erp)
    status, sent = ben.request("PUT", f"/_matrix/client/v3/rooms/{quote(room)}/send/m.room.message/r1",
                               {"msgtype": "m.text", "body": "Confirmed from Element"})
    assert status == 200, sent

    def reply_arrived(deliveries):
        return any(d.key == sent["event_id"] for d in deliveries)
    env.webhook.wait_for(reply_arrived)
    mine = env.webhook.unique(room)
    assert all(d.valid_signature for d in mine)
    assert [d.body["body"] for d in mine] == ["Can you confirm?", "Confirmed from Element"]
    erp_post, reply = mine
    assert erp_post.body["origin"] == "erp" and erp_post.body["erp_txn_id"] == "q1"
    assert reply.body["origin"] == "matrix" and reply.body["erp_txn_id"] is None
    assert reply.body["sender"] == {"user_id": ben_mxid, "erp_user_id": ben_erp, "kind": "erp_user"}
    assert reply.body["object"] == {"type": "order", "id": order}
    assert reply.body["tenant_id"] == tenant
    assert reply.key == reply.body["idempotency_key"] == sent["event_id"]
    assert erp_post.body["sequence"] < reply.body["sequence"]

    # A user cannot pass their message off as the ERP's.
    status, forged = ben.request("PUT", f"/_matrix/client/v3/rooms/{quote(room)}/send/m.room.message/r2",
                                 {"msgtype": "m.text", "body": "forged", "io.erpchat.erp_txn_id": "q1"})
    assert status == 200
    env.webhook.wait_for(lambda ds: any(d.key == forged["event_id"] for d in ds))
    forged_delivery = [d for d in env.webhook.unique(room) if d.key == forged["event_id"]][0]
    assert forged_delivery.body["origin"] == "matrix"


def test_general_room_messages_reach_webhook(env, unique):
    tenant = unique("t")
    status, t = env.erp.request("PUT", f"/_erp/v1/tenants/{tenant}", {"name": "ACME"})
    erp_id = unique("anna")
    env.erp.request("PUT", f"/_erp/v1/users/{erp_id}",
                    {"tenant_id": tenant, "display_name": "Anna", "active": True})
    anna = login(env, erp_id)
    status, sent = anna.request(
        "PUT", f"/_matrix/client/v3/rooms/{quote(t['general_room_id'])}/send/m.room.message/g1",
        {"msgtype": "m.text", "body": "hello all"})
    assert status == 200, sent
    env.webhook.wait_for(lambda ds: any(d.key == sent["event_id"] for d in ds))
    d = [d for d in env.webhook.unique() if d.key == sent["event_id"]][0]
    assert d.body["room"]["kind"] == "general" and d.body["object"] is None
    assert d.body["tenant_id"] == tenant


def _assert_room_delivered_once_in_order(env: Env, room: str, expected_event_ids: list[str]) -> None:
    deliveries = env.webhook.unique(room)
    assert [d.key for d in deliveries] == expected_event_ids
    seqs = [d.body["sequence"] for d in deliveries]
    assert seqs == sorted(seqs)
    assert all(d.valid_signature for d in deliveries)
    # Redeliveries (at least once) only ever repeat the message in flight: after dedupe by
    # key the arrival order is the room's order.
    raw_keys = [d.key for d in env.webhook.snapshot() if d.body["room"]["room_id"] == room]
    firsts = list(dict.fromkeys(raw_keys))
    assert firsts == expected_event_ids


def test_webhook_outage_then_every_message_once_in_order(env, unique):
    tenant, users, order, room = setup_object(env, unique)
    anna = users["anna"][0]
    env.webhook.stop()
    try:
        for i in range(10):
            status, _ = post(env, tenant, order, {"sender": anna, "body": f"during outage {i}", "txn_id": f"w{i}"})
            assert status == 200
        time.sleep(2)  # the bridge keeps retrying against a closed port
        env.webhook.start()
        env.webhook.fail_with = 503  # then the ERP answers errors for a while
        time.sleep(1.5)
    finally:
        env.webhook.fail_with = None
        if env.webhook._server is None:
            env.webhook.start()
    msgs = room_messages(env, room, tenant)
    assert [m["content"]["body"] for m in msgs] == [f"during outage {i}" for i in range(10)]
    expected = [m["event_id"] for m in msgs]
    env.webhook.wait_for(lambda ds: {d.key for d in ds} >= set(expected), timeout=60)
    _assert_room_delivered_once_in_order(env, room, expected)


def test_bridge_killed_during_burst_loses_and_doubles_nothing(env, unique):
    tenant, users, order, room = setup_object(env, unique)
    anna = users["anna"][0]
    total = 40
    results: dict[int, str] = {}
    failures = [0]
    stop = threading.Event()

    def erp_client(indices):
        # An ERP posting with retries, as the API asks: repeat until a 200.
        erp = env.bridge.erp()
        for i in indices:
            while not stop.is_set():
                try:
                    status, body = post(env, tenant, order, {"sender": anna, "body": f"burst {i}",
                                                     "txn_id": f"b{i}"}, erp)
                except OSError:
                    status, body = 0, None
                if status == 200:
                    results[i] = body["event_id"]
                    break
                failures[0] += 1
                time.sleep(0.05)

    # Four ERP workers post concurrently; the bridge is killed while they are at it.
    threads = [threading.Thread(target=erp_client, args=(range(k, total, 4),)) for k in range(4)]
    for t in threads:
        t.start()
    deadline = time.time() + 30
    while len(results) < 8 and time.time() < deadline:
        time.sleep(0.01)
    env.bridge.kill()
    time.sleep(0.5)
    env.bridge.start()
    for t in threads:
        t.join(120)
    stop.set()
    assert len(results) == total, (len(results), env.bridge.log_text())
    assert failures[0] > 0  # the ERP did see the bridge go away mid-burst, and retried

    msgs = room_messages(env, room, tenant)
    bodies = [m["content"]["body"] for m in msgs]
    assert sorted(bodies) == sorted(f"burst {i}" for i in range(total)), "lost or doubled messages"
    assert {m["event_id"] for m in msgs} == set(results.values())
    # Each ERP txn_id answered with the one event it made.
    by_body = {m["content"]["body"]: m["event_id"] for m in msgs}
    assert all(results[i] == by_body[f"burst {i}"] for i in range(total))
    expected = [m["event_id"] for m in msgs]
    env.webhook.wait_for(lambda ds: {d.key for d in ds} >= set(expected), timeout=60)
    _assert_room_delivered_once_in_order(env, room, expected)
    for d in env.webhook.unique(room):
        assert d.body["origin"] == "erp"


def test_crash_between_send_and_record_does_not_double(env, unique):
    """The bridge dies right after the homeserver accepted a message and before it stored
    the event id: the ERP's retry must find that message, not send a second one."""
    tenant, users, order, room = setup_object(env, unique)
    request = {"sender": users["anna"][0], "body": "exactly once", "txn_id": "crash-1"}
    env.bridge.stop()
    env.bridge.start(extra_env={"ERP_BRIDGE_FAULT": "after-send:crash-1"})
    try:
        status, _ = post(env, tenant, order, request)
    except OSError:
        status = 0
    assert status != 200
    assert env.bridge.proc.wait(10) == 137
    env.bridge.proc = None
    env.bridge.start()
    status, body = post(env, tenant, order, request)
    assert status == 200, body
    msgs = room_messages(env, room, tenant)
    assert [m["content"]["body"] for m in msgs] == ["exactly once"]
    assert body["event_id"] == msgs[0]["event_id"]
    status, again = post(env, tenant, order, request)
    assert again == body
    env.webhook.wait_for(lambda ds: any(d.key == body["event_id"] for d in ds))
    _assert_room_delivered_once_in_order(env, room, [body["event_id"]])
    assert env.webhook.unique(room)[0].body["origin"] == "erp"


def test_as_transactions_are_authenticated_and_deduplicated(env, unique):
    tenant, users, order, room = setup_object(env, unique)
    bridge = Http(env.bridge.base_url)
    txn_path = f"/_matrix/app/v1/transactions/{unique('txn')}"
    event = {"type": "m.room.message", "room_id": room, "sender": users["anna"][1],
             "event_id": f"$fake-{unique('e')}", "origin_server_ts": 1,
             "content": {"msgtype": "m.text", "body": "pushed"}}
    status, body = bridge.request("PUT", txn_path, {"events": [event]})
    assert status == 401 and body["errcode"] == "M_MISSING_TOKEN"
    status, body = bridge.request("PUT", txn_path, {"events": [event]}, token="wrong")
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = bridge.request("PUT", txn_path, {"events": [event]}, token=env.bridge.hs_token)
    assert status == 200 and body == {}
    # The same transaction again (a homeserver retry), also with the legacy query token.
    status, body = bridge.request("PUT", txn_path + f"?access_token={env.bridge.hs_token}",
                                  {"events": [event]})
    assert status == 200 and body == {}
    # ...and after a bridge restart: the dedupe is persistent.
    env.bridge.stop()
    env.bridge.start()
    status, body = bridge.request("PUT", txn_path, {"events": [event]}, token=env.bridge.hs_token)
    assert status == 200
    env.webhook.wait_for(lambda ds: any(d.key == event["event_id"] for d in ds))
    time.sleep(0.5)
    assert [d.key for d in env.webhook.snapshot()].count(event["event_id"]) == 1

    status, body = bridge.request("PUT", "/_matrix/app/v1/transactions/x", raw=b"nope",
                                  token=env.bridge.hs_token)
    assert status == 400


def test_as_queries_and_ping(env, unique):
    tenant, users, order, room = setup_object(env, unique)
    bridge = Http(env.bridge.base_url, env.bridge.hs_token)
    status, _ = bridge.request("GET", f"/_matrix/app/v1/users/{quote(users['anna'][1])}")
    assert status == 200
    status, _ = bridge.request("GET", f"/_matrix/app/v1/users/{quote('@_erp_u_nobody:' + SERVER)}")
    assert status == 404
    status, _ = bridge.request("GET", f"/_matrix/app/v1/rooms/{quote('#_erp_nothing:' + SERVER)}")
    assert status == 404
    status, body = bridge.request("POST", "/_matrix/app/v1/ping", {"transaction_id": "t"})
    assert status == 200 and body == {}
    status, body = Http(env.bridge.base_url).request("POST", "/_matrix/app/v1/ping", {})
    assert status == 401
    status, body = bridge.request("GET", "/_matrix/app/v1/thirdparty/protocol/erp")
    assert status == 404 and body["errcode"] == "M_UNRECOGNIZED"
    # The homeserver's ping reaches the bridge through the registration's url and hs_token.
    status, body = env.hs.request("POST", "/_matrix/client/v1/appservice/erp-bridge/ping",
                                  {"transaction_id": "from-test"})
    assert status == 200, body
    assert "duration_ms" in body
