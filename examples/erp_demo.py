#!/usr/bin/env python3
"""ERP bridge demo, against `make run` (homeserver + bridge with their default configs).

Plays the ERP: creates a tenant, three users and an order with two of them, posts a
notice (Markdown) and a file into the order's room, reads the order back as its room
holds it now, shows its summary and history, closes and reopens it, and prints a link
that signs one of the users in to Element with a one-time login token (no password).

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

    def call(self, method: str, path: str, body: dict | None = None, *, raw: bytes | None = None,
             content_type: str = "application/json") -> dict:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        req.add_header("Content-Type", content_type)
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
    T = f"/_erp/v1/tenants/{tenant}"
    for erp_id, (name, email) in people.items():
        u = erp.call("PUT", f"{T}/users/{erp_id}", {"display_name": name, "email": email, "active": True})
        print(f"user {erp_id}: {u['user_id']} ({name})")

    O = f"{T}/objects/order/{order}"
    o = erp.call("PUT", O, {
        "title": f"Order {order} – Müller KG",
        "participants": ["anna", "ben"],
        "fields": {"customer": "Müller KG", "total": "12480.00", "currency": "EUR",
                   "status": "confirmed", "lines": 3},
    })
    print(f"order {order}: room {o['room_id']}, alias {o['alias']} (participants anna, ben)")

    m = erp.call("POST", f"{O}/messages", {
        "body": f"Order **{order}** was confirmed in the ERP; delivery planned for *next week*.",
        "format": "markdown", "txn_id": f"demo-{order}-confirmed",
    })
    print(f"notice posted (Markdown): {m['event_id']}")
    invoice = f"Invoice for order {order}\nTotal: 12480.00 EUR\n".encode()
    f = erp.call("POST", f"{O}/attachments?filename=invoice-{order}.txt&txn_id=demo-{order}-invoice"
                         f"&sender=anna&caption=The+invoice", raw=invoice, content_type="text/plain")
    print(f"file posted by anna: {f['event_id']} ({f['content_uri']})")

    got = erp.call("GET", O)
    members = ", ".join(f"{p['erp_user_id']}={p['membership']}" for p in got["participants"])
    print(f"\nread back from the room: name {got['room_name']!r}, state {got['state']}, "
          f"fields {got['fields']}, participants {members}")
    summary = erp.call("GET", f"{O}/summary?last=3")
    print(f"summary: {summary['participant_count']} participants, {summary['message_count']} messages, "
          f"{len(summary['open_threads'])} threads, last activity {summary['last_activity_ts']}")

    history = erp.call("GET", f"{O}/messages?limit=5")
    print("\nlatest messages in the order room (newest first):")
    for msg in history["chunk"]:
        who = msg["sender"] or "ERP (bridge bot)"
        extra = f" [file {msg['attachment']['filename']}: {msg['attachment']['url'][:60]}...]" if msg["attachment"] else ""
        print(f"  [{msg['msgtype']}] {who}: {msg['body']}{extra}")

    closed = erp.call("DELETE", O)
    print(f"\norder closed (room read-only for people): state {closed['state']}, "
          f"name now {erp.call('GET', O)['room_name']!r}")
    reopened = erp.call("PUT", O, {"title": f"Order {order} – Müller KG", "participants": ["anna", "ben"],
                                   "fields": got["fields"], "state": "open"})
    print(f"order reopened: state {reopened['state']}")

    objects = erp.call("GET", f"{T}/objects?type=order&limit=10")
    print(f"orders of {tenant}: {[x['object_id'] for x in objects['chunk']]}")

    login = erp.call("POST", f"{T}/users/anna/login-token", {})
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
