"""The server-server REST surface (served on listeners with `resources: [federation]`):
the key server, the federation API's queries, events, membership handshakes and
transactions. Thin like `client_api`: handlers authenticate the origin server, check
what it may see, and call the core (`hs.federation`)."""
from __future__ import annotations

from client_api.http import Router
from federation_api import events, keys, membership, queries


def register_all_routes(router: Router) -> None:
    for module in (keys, queries, events, membership):
        module.register(router)
