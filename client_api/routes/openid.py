"""OpenID tokens for widgets and integration managers: a user asks for a short-lived token
and hands it to a third party, which asks the homeserver who it belongs to. The
federation userinfo endpoint is served on the client listener until federation exists."""
from __future__ import annotations

import secrets
import time

from client_api.http import Req, Router
from homeserver.accounts import hash_token
from homeserver.errors import MatrixError, forbidden, missing_param
from storage import openid as openid_store


async def request_token(req: Req, user_id: str):
    if user_id != req.user_id:
        raise forbidden("you may only request OpenID tokens for yourself")
    req.json(allow_empty=True)  # an empty object, reserved for future use; must be JSON
    lifetime_ms = req.hs.config.openid.token_lifetime_ms
    token = secrets.token_urlsafe(32)
    now = int(time.time() * 1000)
    await req.hs.db.run(openid_store.add_token, hash_token(token), user_id, now + lifetime_ms, now)
    return {"access_token": token, "token_type": "Bearer",
            "matrix_server_name": req.hs.server_name, "expires_in": lifetime_ms // 1000}


async def userinfo(req: Req):
    token = req.query("access_token")
    if not token:
        raise missing_param("access_token is required")
    user_id = await req.hs.db.run(openid_store.user_of_token, hash_token(token), int(time.time() * 1000))
    if user_id is None:
        raise MatrixError(401, "M_UNKNOWN_TOKEN", "the OpenID token is unknown or has expired")
    return {"sub": user_id}


def register(router: Router) -> None:
    router.client("POST", "/user/{user_id}/openid/request_token", request_token)
    router.add("GET", "/_matrix/federation/v1/openid/userinfo", userinfo, auth=False)
