"""Calls from one process of the deployment to another's internal listener
(docs/scaling.md): a JSON body POSTed with the shared secret, a JSON answer. Used for a
room write handed to its writer (`remote_writes`) and for asking the stream owner whether
a user is syncing (`push.activity`)."""
from __future__ import annotations

from io import BytesIO
from typing import TYPE_CHECKING, Any

import orjson
from twisted.internet import defer, reactor
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers

if TYPE_CHECKING:
    from homeserver.server import HomeServer

SECRET_HEADER = b"X-Homeserver-Internal"


class InternalClient:
    def __init__(self, hs: "HomeServer") -> None:
        self.hs = hs
        self.cfg = hs.config.worker
        pool = HTTPConnectionPool(reactor, persistent=True)
        pool.maxPersistentPerHost = 16  # a burst of pushes asks the stream owner at once
        self._agent = Agent(reactor, pool=pool)

    async def post(self, instance: str, path: str, body: dict[str, Any],
                   timeout_s: float | None = None) -> tuple[int, Any]:
        """(status, decoded answer) of `instance`; raises when it cannot be reached, does
        not answer within `timeout_s` (None: waits), or answers something that is not JSON."""
        url = (self.hs.writer_layout.url(instance).rstrip("/") + path).encode()
        headers = Headers({b"Content-Type": [b"application/json"],
                           SECRET_HEADER: [(self.cfg.internal_secret or "").encode()]})

        async def exchange() -> tuple[int, Any]:
            response = await self._agent.request(b"POST", url, headers,
                                                 FileBodyProducer(BytesIO(orjson.dumps(body))))
            return response.code, orjson.loads(await readBody(response))
        answer = defer.ensureDeferred(exchange())
        if timeout_s is not None:
            answer.addTimeout(timeout_s, reactor)
        return await answer
