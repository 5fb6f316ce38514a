"""Signed requests to other servers: `X-Matrix` authorization (origin, destination, key,
signature over method, URI and body), JSON in and out, errors as FederationError."""
from __future__ import annotations

import logging
from io import BytesIO
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import orjson
from twisted.internet import defer, reactor
from twisted.web.client import FileBodyProducer
from twisted.web.http_headers import Headers

from homeserver.canonical_json import encode_canonical_json
from homeserver.federation.http_client import Agents, host_header, read_body
from homeserver.federation.request_auth import sign_request

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)
DEFAULT_TIMEOUT_S = 60


class FederationError(Exception):
    """A request to another server failed: `status` 0 when no HTTP answer came back."""

    def __init__(self, destination: str, status: int, errcode: str, error: str) -> None:
        super().__init__(f"{destination}: {status} {errcode} {error}")
        self.destination = destination
        self.status = status
        self.errcode = errcode
        self.error = error


def path(template: str, *parts: str) -> str:
    """A path with each part percent-encoded as one segment."""
    return template % tuple(quote(p, safe="") for p in parts)


class FederationClient:
    def __init__(self, hs: "HomeServer", agents: Agents) -> None:
        self.hs = hs
        self.agents = agents
        whitelist = hs.config.federation.domain_whitelist
        self._whitelist = set(whitelist) if whitelist is not None else None

    def may_contact(self, destination: str) -> bool:
        return destination != self.hs.server_name and (
            self._whitelist is None or destination in self._whitelist)

    async def request(self, method: str, destination: str, path: str, *, query: dict | None = None,
                      body: Any = None, signed: bool = True, timeout: float = DEFAULT_TIMEOUT_S) -> Any:
        if not self.may_contact(destination):
            raise FederationError(destination, 0, "M_FORBIDDEN", "federation with this server is not allowed")
        uri = path + ("?" + urlencode(query, doseq=True) if query else "")
        headers = Headers({b"Host": [host_header(destination)], b"User-Agent": [b"erp-homeserver"]})
        data = None
        if body is not None:
            data = encode_canonical_json(body)
            headers.addRawHeader(b"Content-Type", b"application/json")
        if signed:
            auth = sign_request(method, uri, self.hs.server_name, destination, self.hs.signing_key, body)
            headers.addRawHeader(b"Authorization", auth.encode("utf-8"))
        url = f"matrix-federation://{destination}{uri}".encode("utf-8")
        producer = FileBodyProducer(BytesIO(data)) if data is not None else None
        try:
            d = self.agents.federation.request(method.encode(), url, headers, producer)
            response = await d.addTimeout(timeout, reactor)
            raw = await defer.ensureDeferred(read_body(response)).addTimeout(timeout, reactor)
        except FederationError:
            raise
        except Exception as e:
            raise FederationError(destination, 0, "M_UNKNOWN", f"{type(e).__name__}: {e}") from None
        try:
            parsed = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            parsed = None
        if not 200 <= response.code < 300:
            errcode = parsed.get("errcode", "M_UNKNOWN") if isinstance(parsed, dict) else "M_UNKNOWN"
            error = parsed.get("error", "") if isinstance(parsed, dict) else raw[:200].decode("utf-8", "replace")
            raise FederationError(destination, response.code, errcode, str(error))
        if parsed is None and raw:
            raise FederationError(destination, response.code, "M_NOT_JSON", "the answer is not JSON")
        return parsed

    async def get(self, destination: str, path: str, query: dict | None = None, **kw: Any) -> Any:
        return await self.request("GET", destination, path, query=query, **kw)

    async def put(self, destination: str, path: str, body: Any, query: dict | None = None, **kw: Any) -> Any:
        return await self.request("PUT", destination, path, query=query, body=body, **kw)

    async def post(self, destination: str, path: str, body: Any, query: dict | None = None, **kw: Any) -> Any:
        return await self.request("POST", destination, path, query=query, body=body, **kw)
