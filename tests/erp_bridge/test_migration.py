"""Schema 1 -> 2: a deployment's existing object mappings (tenant-less ids and aliases)
are re-keyed by tenant, keep their rooms and their ERP message txn_ids, and get the new
tenant-carrying alias on the homeserver (the old one is dropped)."""
from __future__ import annotations

import time
from urllib.parse import quote

import psycopg2

from appservice.erp_bridge.migrations import _001_INITIAL
from tests.erp_bridge.harness import BridgeProcess
from tests.server_harness import ServerProcess

SERVER = "test.local"


def test_schema_1_mappings_are_migrated(tmp_path):
    server = ServerProcess(tmp_path / "hs")
    bridge = BridgeProcess(tmp_path / "bridge", server, None)
    server.extra_config = f"app_service_config_files:\n  - {bridge.registration_path}\n"
    server.start()
    try:
        hs = bridge.as_client()
        bot, anna = f"@_erp_bot_acme:{SERVER}", f"@_erp_u_anna:{SERVER}"
        for localpart, user in (("_erp_bot_acme", bot), ("_erp_u_anna", anna)):
            assert hs.request("POST", "/_matrix/client/v3/register",
                              {"type": "m.login.application_service", "username": localpart})[0] == 200
            assert hs.request("PUT", f"/_homeserver/admin/v1/users/{quote(user)}/tenant",
                              {"tenant_id": "acme"})[0] == 200
        rooms = {}
        for name, alias in (("space", "_erp_space.acme"), ("general", "_erp_general.acme"),
                            ("order", "_erp_order_4711")):
            status, body = hs.as_user("POST", "/_matrix/client/v3/createRoom", bot,
                                      {"room_alias_name": alias, "name": name, "invite": [anna],
                                       "power_level_content_override": {"invite": 50}})
            assert status == 200, body
            rooms[name] = body["room_id"]
            assert hs.as_user("POST", f"/_matrix/client/v3/join/{quote(body['room_id'])}", anna, {})[0] == 200
        status, sent = hs.as_user("PUT", f"/_matrix/client/v3/rooms/{quote(rooms['order'])}/send/m.room.message/x1",
                                  anna, {"msgtype": "m.text", "body": "from v1", "io.erpchat.erp_txn_id": "old-1"})
        assert status == 200
        # The bridge's tables as schema 1 left them.
        conn = psycopg2.connect(server.dsn())
        with conn, conn.cursor() as cur:
            cur.execute("CREATE SCHEMA erp_bridge")
            cur.execute("CREATE TABLE erp_bridge.schema_version (version INT NOT NULL)")
            cur.execute(_001_INITIAL)
            cur.execute("INSERT INTO erp_bridge.schema_version VALUES (1)")
            cur.execute("INSERT INTO erp_bridge.tenants VALUES ('acme', 'ACME', %s, %s, %s, 1, 1)",
                        (bot, rooms["space"], rooms["general"]))
            cur.execute("INSERT INTO erp_bridge.users VALUES ('anna', %s, 'acme', 'Anna', NULL, TRUE, 1, 1)", (anna,))
            cur.execute("INSERT INTO erp_bridge.objects VALUES ('order', '4711', 'acme', %s, %s, 'Order 4711',"
                        " '{}', '[\"anna\"]', 1, 1)", (rooms["order"], f"#_erp_order_4711:{SERVER}"))
            for kind, alias in (("space", "#_erp_space.acme"), ("general", "#_erp_general.acme"),
                                ("order", "#_erp_order_4711")):
                cur.execute("INSERT INTO erp_bridge.rooms VALUES (%s, 'acme', %s, %s, %s, %s, 1)",
                            (rooms[kind], "object" if kind == "order" else kind,
                             "order" if kind == "order" else None, "4711" if kind == "order" else None,
                             f"{alias}:{SERVER}"))
            cur.execute("INSERT INTO erp_bridge.erp_messages VALUES ('order', '4711', 'old-1', %s, %s,"
                        " %s, 'erp.old', %s, 1)",
                        (rooms["order"], anna, _v1_hash("anna", "from v1"), sent["event_id"]))
        conn.close()

        bridge.start()
        erp = bridge.erp()
        new_alias = f"#_erp_obj.acme.order.4711:{SERVER}"
        deadline = time.time() + 30
        while hs.resolve(new_alias, bot) != rooms["order"] and time.time() < deadline:
            time.sleep(0.2)
        assert hs.resolve(new_alias, bot) == rooms["order"]
        # The bridge drops the old alias after making the new one canonical: two requests later.
        while hs.resolve(f"#_erp_order_4711:{SERVER}", bot) is not None and time.time() < deadline:
            time.sleep(0.2)
        assert hs.resolve(f"#_erp_order_4711:{SERVER}", bot) is None
        assert hs.state(rooms["order"], "m.room.canonical_alias", "", bot)["alias"] == new_alias
        status, got = erp.request("GET", "/_erp/v1/tenants/acme/objects/order/4711")
        assert status == 200, got
        assert got["room_id"] == rooms["order"] and got["alias"] == new_alias and got["state"] == "open"
        # The same room keeps being used, and an old txn_id still answers with its event.
        status, put = erp.request("PUT", "/_erp/v1/tenants/acme/objects/order/4711",
                                  {"title": "Order 4711", "participants": ["anna"]})
        assert status == 200 and put["room_id"] == rooms["order"]
        status, again = erp.request("POST", "/_erp/v1/tenants/acme/objects/order/4711/messages",
                                    {"sender": "anna", "body": "from v1", "txn_id": "old-1"})
        assert status == 200 and again["event_id"] == sent["event_id"]
        # The summary counts the history from before the event index.
        status, summary = erp.request("GET", "/_erp/v1/tenants/acme/objects/order/4711/summary")
        assert summary["message_count"] == 1 and summary["last_messages"][0]["body"] == "from v1"
    finally:
        bridge.stop()
        server.stop()
        server.stop_postgres()


def _v1_hash(sender: str, body: str) -> str:
    from appservice.erp_bridge.provisioning import request_hash
    return request_hash(sender, body)
