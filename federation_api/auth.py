"""Who is asking: the origin server of a request, proved by its X-Matrix signature."""
from __future__ import annotations

import time

from client_api.http import Req
from homeserver.errors import MatrixError
from homeserver.federation.keyring import KeyLookupError
from homeserver.federation.request_auth import BadAuthorization, parse_x_matrix, verify_request

FEDERATION_PREFIX = "/_matrix/federation/(?:v1|v2)"


def unauthorized(msg: str) -> MatrixError:
    return MatrixError(401, "M_UNAUTHORIZED", msg)


async def authenticate_origin(req: Req) -> str:
    """The origin server name, after checking the request's X-Matrix signature (any of the
    Authorization headers may carry it), its destination and the domain whitelist."""
    federation = req.hs.federation
    headers = req.headers.getRawHeaders(b"authorization") or []
    if not headers:
        raise unauthorized("missing X-Matrix authorization")
    content = req.json() if req.body.strip() else None
    uri = req.uri.decode("utf-8", "replace") if req.uri else req.path
    method = req.method
    last = "no X-Matrix authorization"
    for raw in headers:
        try:
            x = parse_x_matrix(raw.decode("utf-8", "replace"))
        except BadAuthorization as e:
            last = str(e)
            continue
        if x.destination is not None and x.destination != req.hs.server_name:
            raise unauthorized("the request is for another server")
        if not federation.client.may_contact(x.origin):
            raise MatrixError(403, "M_FORBIDDEN", "federation with your server is not allowed")
        try:
            key = await federation.keyring.get_key(x.origin, x.key, int(time.time() * 1000))
            verify_request(x, method, uri, req.hs.server_name, content, key)
        except (KeyLookupError, BadAuthorization) as e:
            last = str(e)
            continue
        federation.origin_seen(x.origin)
        return x.origin
    raise unauthorized(last)
