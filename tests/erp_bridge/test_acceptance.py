"""The issue's acceptance checks for the bridge that need a real client or a long outage:
an ERP user signs in with a bridge login token through matrix-nio, sees the order room
with its fields, and the reply reaches the ERP webhook; and the webhook is unreachable
for two minutes during a burst of 500 messages, then gets all 500, once each, in order."""
from __future__ import annotations

import asyncio
import os
import time
from urllib.parse import quote

from nio import AsyncClient, LoginResponse, RoomGetStateResponse, RoomSendResponse

from tests.erp_bridge.harness import Env
from tests.erp_bridge.test_messages import setup_object

OUTAGE_S = float(os.environ.get("WEBHOOK_OUTAGE_SECONDS", "120"))


def test_erp_user_signs_in_with_nio_and_replies(env: Env, unique):
    tenant, users, order, room_id = setup_object(env, unique)
    fields = {"customer": "Initech", "total": "1200.00", "status": "packed"}
    status, _ = env.erp.request("PUT", f"/_erp/v1/tenants/{tenant}/objects/order/{order}", {
        "tenant_id": tenant, "title": f"Order {order}", "fields": fields,
        "participants": [users["anna"][0], users["ben"][0]]})
    assert status == 200
    ben_erp, ben_mxid = users["ben"]
    status, tok = env.erp.request("POST", f"/_erp/v1/users/{ben_erp}/login-token", {})
    assert status == 200 and tok["expires_in_ms"] > 0

    async def main() -> str:
        client = AsyncClient(env.server.base_url)
        resp = await client.login(token=tok["login_token"], device_name="ERP sign-in")
        assert isinstance(resp, LoginResponse), resp
        assert client.user_id == ben_mxid
        sync = await client.sync(timeout=0, full_state=True)
        assert room_id in sync.rooms.join  # the order room is there
        state = await client.room_get_state(room_id)
        assert isinstance(state, RoomGetStateResponse), state
        by_type = {(e["type"], e.get("state_key")): e["content"] for e in state.events}
        assert by_type[("m.room.name", "")]["name"] == f"Order {order}"
        object_state = [c for (t, _), c in by_type.items() if t == "io.erpchat.object"]
        assert object_state and object_state[0]["fields"] == fields
        sent = await client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "On its way"})
        assert isinstance(sent, RoomSendResponse), sent
        # the token was one-time
        again = await AsyncClient(env.server.base_url).login(token=tok["login_token"])
        assert not isinstance(again, LoginResponse)
        await client.close()
        return sent.event_id

    event_id = asyncio.run(main())
    deliveries = env.webhook.wait_for(lambda ds: any(d.key == event_id for d in ds))
    reply = [d for d in deliveries if d.key == event_id][0]
    assert reply.valid_signature
    assert reply.body["body"] == "On its way" and reply.body["object"] == {"type": "order", "id": order}
    assert reply.body["sender"]["erp_user_id"] == ben_erp


def test_webhook_down_two_minutes_during_500_messages(env: Env, unique):
    tenant, users, order, room_id = setup_object(env, unique)
    anna_erp, anna_mxid = users["anna"]
    env.webhook.stop()
    outage_start = time.time()
    try:
        sent = []
        for i in range(500):
            # Half from the ERP side, half written by a person in Matrix.
            if i % 2:
                status, body = env.hs.as_user(
                    "PUT", f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/b{i}",
                    anna_mxid, {"msgtype": "m.text", "body": f"burst {i}"})
            else:
                status, body = env.erp.request("POST", f"/_erp/v1/tenants/{tenant}/objects/order/{order}/messages",
                                               {"sender": anna_erp, "body": f"burst {i}", "txn_id": f"b{i}"})
            assert status == 200, body
            sent.append(f"burst {i}")
        time.sleep(max(0.0, OUTAGE_S - (time.time() - outage_start)))
    finally:
        env.webhook.start()
    env.webhook.wait_for(lambda ds: sum(1 for d in ds if d.body.get("body", "").startswith("burst ")
                                        and d.body["room"]["room_id"] == room_id) >= 500, timeout=120)
    mine = [d for d in env.webhook.unique(room_id) if d.body["body"].startswith("burst ")]
    assert [d.body["body"] for d in mine] == sent  # all 500, once each after dedupe, in order
    assert all(d.valid_signature for d in mine)
    raw = [d.key for d in env.webhook.snapshot() if d.body["room"]["room_id"] == room_id]
    assert list(dict.fromkeys(raw)) == [d.key for d in env.webhook.unique(room_id)]
