#!/usr/bin/env python3
"""ERP bridge demo, against `make run` (homeserver + bridge with their default configs).

Plays the ERP: creates a tenant, three users and an order with two of them, posts a
notice into the order's room, shows the room's history, and prints a link that signs one
of the users in to Element with a one-time login token (no password).

    .venv/bin/python examples/erp_demo.py                        # finds the bridge config
    .venv/bin/python examples/erp_demo.py --bridge-config data/erp-bridge.yaml

Every call is idempotent: running the demo again changes nothing but the login token.
Only the standard library is used: this is what any ERP's HTTP client would do.
"""
from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
CONFIG_CANDIDATES = ["data/erp-bridge.yaml", "erp-bridge.yaml", "data/erp_bridge.yaml"]


class Erp:
    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            raise SystemExit(f"{method} {path} -> {e.code} {e.read().decode(errors='replace')}") from None
        except urllib.error.URLError as e:
            raise SystemExit(f"cannot reach the bridge at {self.base_url}: {e.reason} "
                             "(is `make run` running?)") from None


def find_config(given: str | None) -> Path:
    if given:
        return Path(given)
    for candidate in CONFIG_CANDIDATES:
        path = REPO / candidate
        if path.exists():
            return path
    raise SystemExit("no bridge config found (looked for " + ", ".join(CONFIG_CANDIDATES)
                     + "); pass --bridge-config")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bridge-config", help="the bridge's config file (for its URL and API token)")
    parser.add_argument("--bridge-url", help="default: from the config's listen section")
    parser.add_argument("--api-token", help="default: erp.api_token from the config")
    parser.add_argument("--tenant", default="acme-demo")
    parser.add_argument("--order", default="4711")
    args = parser.parse_args()

    config = yaml.safe_load(find_config(args.bridge_config).read_text()) or {}
    listen = config.get("listen") or {}
    host = listen.get("host", "127.0.0.1")
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    bridge_url = args.bridge_url or f"http://{host}:{listen.get('port', 9010)}"
    token = args.api_token or (config.get("erp") or {}).get("api_token")
    if not token:
        raise SystemExit("no erp.api_token in the bridge config; pass --api-token")
    erp = Erp(bridge_url, token)
    tenant, order = args.tenant, args.order

    print(f"ERP bridge at {bridge_url}\n")
    t = erp.call("PUT", f"/_erp/v1/tenants/{tenant}", {"name": "ACME Demo GmbH"})
    print(f"tenant {tenant}: space {t['space_id']}, general room {t['general_room_id']}")

    people = {
        "anna": ("Anna Schmidt", "anna@acme.example"),
        "ben": ("Ben Weber", "ben@acme.example"),
        "carla": ("Carla Rossi", "carla@acme.example"),
    }
    for erp_id, (name, email) in people.items():
        u = erp.call("PUT", f"/_erp/v1/users/{erp_id}",
                     {"tenant_id": tenant, "display_name": name, "email": email, "active": True})
        print(f"user {erp_id}: {u['user_id']} ({name})")

    o = erp.call("PUT", f"/_erp/v1/objects/order/{order}", {
        "tenant_id": tenant,
        "title": f"Order {order} – Müller KG",
        "participants": ["anna", "ben"],
        "fields": {"customer": "Müller KG", "total": "12480.00", "currency": "EUR",
                   "status": "confirmed", "lines": 3},
    })
    print(f"order {order}: room {o['room_id']}, alias {o['alias']} (participants anna, ben)")

    m = erp.call("POST", f"/_erp/v1/objects/order/{order}/messages", {
        "body": f"Order {order} was confirmed in the ERP; delivery planned for next week.",
        "txn_id": f"demo-{order}-confirmed",
    })
    print(f"notice posted: {m['event_id']}")

    history = erp.call("GET", f"/_erp/v1/objects/order/{order}/messages?limit=5")
    print("\nlatest messages in the order room (newest first):")
    for msg in history["chunk"]:
        who = msg["sender"] or "ERP (bridge bot)"
        print(f"  [{msg['msgtype']}] {who}: {msg['body']}")

    login = erp.call("POST", "/_erp/v1/users/anna/login-token", {})
    seconds = (login.get("expires_in_ms") or 0) // 1000
    print(f"\nSign in as Anna ({login['user_id']}) in Element (one-time link, valid {seconds} s):")
    print(f"  {login['login_url']}")
    print("  (the link opens erp-login.html, which must be served next to Element's index.html;\n"
          "   write it with `.venv/bin/erp-bridge element-login-page -o erp-login.html`)")
    print("Or exchange the token with any Matrix client / curl:")
    print(f"  curl -s -XPOST {login['homeserver_url']}/_matrix/client/v3/login "
          f"-d '{json.dumps({'type': 'm.login.token', 'token': login['login_token']})}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
