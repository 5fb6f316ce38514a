"""`GET /_erp/v1/media/{tenant}/{server}/{media_id}?exp=&sig=`: a file shared in a bridged
room, for the ERP. The link's signature is the credential (see media_links.py). The
bridge fetches the file from the homeserver's authenticated media API as the tenant's bot
and streams it out as it arrives, never holding it whole: the homeserver connection is
paused while the ERP's side is not taking data."""
from __future__ import annotations

import logging

from twisted.internet import defer, protocol
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IRequest

from appservice.erp_bridge import store
from appservice.erp_bridge.db import Database
from appservice.erp_bridge.errors import ApiError, not_found
from appservice.erp_bridge.http import Streamed, query_arg
from appservice.erp_bridge.ids import Ids
from appservice.erp_bridge.matrix import MatrixClient, MatrixError
from appservice.erp_bridge.media_links import MediaLinks

logger = logging.getLogger(__name__)
_PASSED_HEADERS = (b"content-type", b"content-length", b"content-disposition")


class _Relay(protocol.Protocol):
    """Copies a response body into a request, as a streaming producer for it."""

    def __init__(self, request: IRequest, done: defer.Deferred) -> None:
        self.request = request
        self.done = done
        self.gone = False
        request.notifyFinish().addErrback(self._client_gone)

    def connectionMade(self) -> None:
        self.request.registerProducer(self, True)

    def _client_gone(self, _failure) -> None:
        self.gone = True
        if self.transport is not None:
            self.transport.stopProducing()

    def pauseProducing(self) -> None:
        self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self.transport.resumeProducing()

    def stopProducing(self) -> None:
        self.transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        if not self.gone:
            self.request.write(data)

    def connectionLost(self, reason=protocol.connectionDone) -> None:
        if not self.gone:
            self.request.unregisterProducer()
            if reason.check(ResponseDone, PotentialDataLoss):
                self.request.finish()
            else:
                logger.warning("media relay cut off: %s", reason.getErrorMessage())
                self.request.loseConnection()
        self.done.callback(None)


class MediaProxy:
    def __init__(self, db: Database, matrix: MatrixClient, ids: Ids, links: MediaLinks) -> None:
        self.db = db
        self.matrix = matrix
        self.ids = ids
        self.links = links

    async def download(self, request: IRequest, tenant_id: str, server_name: str, media_id: str):
        if not self.links.check(tenant_id, server_name, media_id, query_arg(request, "exp"),
                                query_arg(request, "sig")):
            raise ApiError(403, "M_FORBIDDEN", "this link is invalid or has expired")
        if await self.db.run(store.get_tenant, tenant_id) is None:
            raise not_found("unknown tenant")
        try:
            resp = await self.matrix.open_download(server_name, media_id, self.ids.tenant_bot(tenant_id))
        except MatrixError as e:
            if e.status == 404:
                raise not_found("no such file") from None
            if e.status == 0:
                raise ApiError(503, "IO.ERPCHAT.HOMESERVER_UNAVAILABLE", "the homeserver cannot be reached") from None
            raise ApiError(502, "IO.ERPCHAT.HOMESERVER_ERROR", f"the homeserver answered {e.status}") from None
        request.setResponseCode(200)
        for name in _PASSED_HEADERS:
            values = resp.headers.getRawHeaders(name)
            if values:
                request.setHeader(name, values[0])
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"content-security-policy", b"sandbox; default-src 'none'")
        request.setHeader(b"cache-control", b"private, no-store")
        done: defer.Deferred = defer.Deferred()
        resp.deliverBody(_Relay(request, done))
        await done
        return 200, Streamed()
