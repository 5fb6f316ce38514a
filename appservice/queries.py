"""Calls from the homeserver to application services: user and alias queries (lazy
provisioning) and the ping check."""
from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING
from urllib.parse import quote

import treq
from twisted.internet import defer, error

from appservice.registration import Registration

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)
QUERY_TIMEOUT_S = 10


async def call(reg: Registration, method: str, path: str, body: dict | None = None,
               timeout: float = QUERY_TIMEOUT_S) -> tuple[int, bytes]:
    """One request to the service with its hs_token (header, plus the legacy query
    parameter older services read)."""
    assert reg.url is not None
    url = reg.url.rstrip("/") + path
    sep = "&" if "?" in url else "?"
    url = f"{url}{sep}access_token={quote(reg.hs_token)}"
    headers = {"Authorization": [f"Bearer {reg.hs_token}"], "Content-Type": ["application/json"]}
    data = json.dumps(body).encode() if body is not None else None
    resp = await treq.request(method, url, headers=headers, data=data, timeout=timeout)
    content = await resp.content()
    return resp.code, content


class Queries:
    def __init__(self, hs: "HomeServer", registrations: list[Registration]) -> None:
        self.hs = hs
        self.registrations = registrations

    async def query_user(self, user_id: str) -> bool:
        """Ask the services whose namespace covers the user to create it; True if one did."""
        for reg in self.registrations:
            if reg.url and reg.is_user_in_namespace(user_id):
                try:
                    code, _ = await call(reg, "GET", f"/_matrix/app/v1/users/{quote(user_id)}")
                except Exception as e:  # a service being down must not break the caller
                    logger.warning("user query to %s failed: %s", reg.id, e)
                    continue
                if code == 200:
                    return True
        return False

    async def query_alias(self, alias: str) -> bool:
        for reg in self.registrations:
            if reg.url and reg.is_alias_in_namespace(alias):
                try:
                    code, _ = await call(reg, "GET", f"/_matrix/app/v1/rooms/{quote(alias)}")
                except Exception as e:
                    logger.warning("alias query to %s failed: %s", reg.id, e)
                    continue
                if code == 200:
                    return True
        return False

    async def ping(self, reg: Registration, transaction_id: str | None) -> tuple[int, dict]:
        if not reg.url:
            return 400, {"errcode": "M_URL_NOT_SET", "error": "the application service has no URL"}
        body = {"transaction_id": transaction_id} if transaction_id is not None else {}
        start = time.monotonic()
        try:
            code, content = await call(reg, "POST", "/_matrix/app/v1/ping", body, timeout=15)
        except (defer.TimeoutError, error.TimeoutError):
            return 504, {"errcode": "M_CONNECTION_TIMEOUT", "error": "the application service timed out"}
        except Exception as e:
            return 502, {"errcode": "M_CONNECTION_FAILED", "error": f"cannot reach the application service: {e}"}
        if code != 200:
            return 502, {"errcode": "M_BAD_STATUS", "error": "the application service answered with an error",
                         "status": code, "body": content.decode("utf-8", "replace")}
        return 200, {"duration_ms": int((time.monotonic() - start) * 1000)}

