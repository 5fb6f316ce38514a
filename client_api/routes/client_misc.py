"""Requests clients such as Element Web make at start-up that need only a fixed answer
here: no TURN server is configured. (Third-party protocols: routes/thirdparty.py.)

Unstable and not-yet-served probes (OIDC-native auth metadata, dehydrated devices, ...)
are deliberately absent: they fall through to the router's 404 M_UNRECOGNIZED, which is
what clients read as "not supported"."""
from __future__ import annotations

from client_api.http import Req, Router


async def turn_server(req: Req):
    # No TURN server configured. The spec's 200 schema describes credentials only and
    # defines no "none" answer; an empty object is what clients (matrix-js-sdk) read as
    # "no TURN credentials", and what other homeservers send in this case.
    return {}


def register(router: Router) -> None:
    router.client("GET", "/voip/turnServer", turn_server)
