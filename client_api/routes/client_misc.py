"""Requests clients such as Element Web make at start-up that need only a fixed answer
here: no TURN server is configured and no bridge offers third-party protocols.

Unstable and not-yet-served probes (OIDC-native auth metadata, dehydrated devices, ...)
are deliberately absent: they fall through to the router's 404 M_UNRECOGNIZED, which is
what clients read as "not supported"."""
from __future__ import annotations

from client_api.http import Req, Router
from homeserver.errors import missing_param, not_found


async def turn_server(req: Req):
    # No TURN server configured. The spec's 200 schema describes credentials only and
    # defines no "none" answer; an empty object is what clients (matrix-js-sdk) read as
    # "no TURN credentials", and what other homeservers send in this case.
    return {}


async def protocols(req: Req):
    return {}


async def protocol(req: Req, protocol: str):
    raise not_found(f"unknown third-party protocol {protocol!r}")


async def protocol_lookup(req: Req, protocol: str):
    raise not_found(f"unknown third-party protocol {protocol!r}")


async def location_by_alias(req: Req):
    if not req.query("alias"):
        raise missing_param("alias is required")
    raise not_found("no third-party location for this room alias")


async def user_by_id(req: Req):
    if not req.query("userid"):
        raise missing_param("userid is required")
    raise not_found("no third-party user for this user id")


def register(router: Router) -> None:
    router.client("GET", "/voip/turnServer", turn_server)
    router.client("GET", "/thirdparty/protocols", protocols)
    router.client("GET", "/thirdparty/protocol/{protocol}", protocol)
    router.client("GET", "/thirdparty/location/{protocol}", protocol_lookup)
    router.client("GET", "/thirdparty/user/{protocol}", protocol_lookup)
    router.client("GET", "/thirdparty/location", location_by_alias)
    router.client("GET", "/thirdparty/user", user_by_id)
