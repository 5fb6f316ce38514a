"""What each listener serves in front of the API: `GET /health` (200 "OK" when start-up
is complete and the database answers; 503 while starting, shutting down, or when the
database does not answer), `/metrics` on listeners given the `metrics` resource, and a
503 for every other request until start-up completes and once shutdown begins (clients
retry; load balancers take the instance out)."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.web import server
from twisted.web.resource import Resource

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)
HEALTH_TIMEOUT_S = 5.0
_NOT_READY = b'{"errcode":"M_UNKNOWN","error":"the server is starting"}'
_STOPPING = b'{"errcode":"M_UNKNOWN","error":"the server is shutting down"}'
_NOT_FOUND = b'{"errcode":"M_UNRECOGNIZED","error":"unrecognized request"}'
_NOT_INTERNAL = b'{"errcode":"M_FORBIDDEN","error":"internal listener"}'


def _ping(cur) -> None:
    cur.execute("SELECT 1")


class ListenerResource(Resource):
    isLeaf = True

    def __init__(self, hs: "HomeServer", api: Resource | None, metrics: Resource | None,
                 internal: bool = False, forwarder: Any = None, x_forwarded: bool = False) -> None:
        super().__init__()
        self.hs = hs
        self.api = api
        self.metrics = metrics
        # An `internal` listener answers only the processes of the deployment (the secret).
        self.internal = internal
        self.x_forwarded = x_forwarded  # behind a proxy: X-Forwarded-For names the client
        self.forwarder = forwarder  # client_api.forwarding.Forwarder with several processes

    def render(self, request: server.Request) -> Any:
        path = request.path
        if path == b"/health":
            defer.ensureDeferred(self._health(request))
            return server.NOT_DONE_YET
        if path == b"/metrics" and self.metrics is not None:
            return self.metrics.render(request)
        if self.api is None:
            return _plain(request, 404, _NOT_FOUND, b"application/json")
        if self.hs.draining:
            request.setHeader(b"Connection", b"close")
            request.setHeader(b"Retry-After", b"5")
            return _plain(request, 503, _STOPPING, b"application/json")
        if not self.hs.ready:
            request.setHeader(b"Retry-After", b"2")
            return _plain(request, 503, _NOT_READY, b"application/json")
        if self.internal:
            from client_api.forwarding import mark_forwarded, secret_ok, tell_position
            if not secret_ok(self.hs, request):
                return _plain(request, 403, _NOT_INTERNAL, b"application/json")
            mark_forwarded(request)
            if self.hs.persister.multi_writer is not None or self.hs.config.worker.owns_streams:
                tell_position(request, self.hs)
            serve = _internal_handlers().get(path)
            if serve is not None and request.method == b"POST":
                defer.ensureDeferred(self._internal_call(request, serve))
                return server.NOT_DONE_YET
        elif self.x_forwarded:
            from client_api.forwarding import trust_forwarded_address
            trust_forwarded_address(request)
        if self.forwarder is not None:
            return self.forwarder.render(request, self.api)
        return self.api.render(request)

    async def _internal_call(self, request: server.Request, serve: Any) -> None:
        request.content.seek(0)
        try:
            status, body = await serve(self.hs, request.content.read())
        except Exception:  # the asking process must hear of it, not wait for its timeout
            logger.exception("internal call %s failed", request.path.decode("ascii", "replace"))
            status, body = 500, {"errcode": "M_UNKNOWN", "error": "internal error"}
        if not request._disconnected:
            import orjson
            request.setResponseCode(status)
            request.setHeader(b"Content-Type", b"application/json")
            request.write(orjson.dumps(body))
            request.finish()

    async def _health(self, request: server.Request) -> None:
        hs = self.hs
        if hs.draining or not hs.ready:
            status, body = 503, b"STOPPING" if hs.draining else b"STARTING"
        else:
            from twisted.internet import reactor
            try:
                await hs.db.run(_ping).addTimeout(HEALTH_TIMEOUT_S, reactor)
                status, body = 200, b"OK"
            except Exception as e:
                logger.warning("health check: the database does not answer: %s", e)
                status, body = 503, b"DATABASE UNAVAILABLE"
        if not request._disconnected:
            request.setResponseCode(status)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            request.setHeader(b"Cache-Control", b"no-cache, no-store, must-revalidate")
            request.write(body)
            request.finish()


_internal: dict[bytes, Any] = {}


def _internal_handlers() -> dict[bytes, Any]:
    """What processes ask each other (POST, JSON in and out): `async (hs, body) ->
    (status, answer)` by path."""
    if not _internal:  # imported late: those modules import the room core
        from homeserver.push.activity import SYNCING_PATH, serve_syncing
        from homeserver.remote_writes import SEND_PATH, serve_send
        from sync import presence_job
        _internal.update({SEND_PATH.encode(): serve_send, SYNCING_PATH.encode(): serve_syncing,
                          presence_job.SYNCING_PATH.encode(): presence_job.serve_syncing})
    return _internal


def _plain(request: server.Request, status: int, body: bytes, content_type: bytes) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", content_type)
    return body
