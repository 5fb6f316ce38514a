"""URL previews (`preview_url`): fetch a page with a size and time limit, read its
OpenGraph data, and keep its image in the media repository.

The server never connects to a private, loopback, link-local, multicast or otherwise
reserved address unless the operator whitelists its range. The check is made on the
address the connection is actually made to: every connection (redirects included) goes
through a resolver that drops refused addresses, so a name that resolves to a public
address when checked and a private one when used (DNS rebinding) gains nothing.

Previews are cached per tenant, because a preview's image is media of the asker's tenant."""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import treq
from PIL import Image
from twisted.internet import defer, reactor
from twisted.internet.interfaces import IReactorPluggableNameResolver, IResolutionReceiver
from twisted.web.client import Agent, BrowserLikeRedirectAgent
from twisted.web.http_headers import Headers
from zope.interface import implementer

from homeserver.async_utils import Coalescer
from homeserver.errors import MatrixError, forbidden
from homeserver.media import content_types
from homeserver.media.ip_filter import IpFilter, parse as parse_ip
from homeserver.media.opengraph import parse_html
from homeserver.media.repository import now_ms
from homeserver.media.upload_sink import UploadSink
from storage import media as media_store

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)

MAX_URL_LENGTH = 2048
MAX_REDIRECTS = 5
USER_AGENT = b"Mozilla/5.0 (compatible; ERP-Homeserver URL preview)"
HTML_TYPES = ("text/html", "application/xhtml+xml")


class _Enough(Exception):
    """The body reached its limit: stop reading."""


class _TooBig(Exception):
    pass


class _Blocked(Exception):
    """Every address of the host was a refused one."""


@implementer(IResolutionReceiver)
class _FilteringReceiver:
    def __init__(self, receiver: Any, ip_filter: IpFilter, owner: "_FilteredReactor") -> None:
        self._receiver, self._filter, self._owner = receiver, ip_filter, owner

    def resolutionBegan(self, resolution: Any) -> None:
        self._receiver.resolutionBegan(resolution)

    def addressResolved(self, address: Any) -> None:
        if self._filter.allows(address.host):
            self._receiver.addressResolved(address)
        else:
            self._owner.blocked = True
            logger.info("URL preview: not connecting to refused address %s", address.host)

    def resolutionComplete(self) -> None:
        self._receiver.resolutionComplete()


class _FilteringResolver:
    def __init__(self, real: Any, ip_filter: IpFilter, owner: "_FilteredReactor") -> None:
        self._real, self._filter, self._owner = real, ip_filter, owner

    def resolveHostName(self, receiver: Any, hostName: str, portNumber: int = 0,
                        addressTypes: Any = None, transportSemantics: str = "TCP") -> Any:
        return self._real.resolveHostName(_FilteringReceiver(receiver, self._filter, self._owner),
                                          hostName, portNumber, addressTypes, transportSemantics)


@implementer(IReactorPluggableNameResolver)
class _FilteredReactor:
    """The reactor, except that host names resolve only to permitted addresses. One per
    preview, so `blocked` tells whether a refused address was met."""

    def __init__(self, real: Any, ip_filter: IpFilter) -> None:
        self._real = real
        self.blocked = False
        self.nameResolver = _FilteringResolver(real.nameResolver, ip_filter, self)

    def installNameResolver(self, resolver: Any) -> Any:
        raise NotImplementedError

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@dataclass
class _Fetched:
    content_type: str
    body: bytes = b""
    stored: Any = None  # ReceivedFile when streamed into the media store


class UrlPreviewer:
    def __init__(self, hs: "HomeServer") -> None:
        self.hs = hs
        self.config = hs.config.media.url_preview
        self.ip_filter = IpFilter(self.config.ip_range_whitelist)
        self._building = Coalescer()

    async def preview(self, url: str, user_id: str) -> dict[str, Any]:
        self._check_url(url)
        tenant_key = await self.hs.tenancy.tenant_of(user_id) or ""
        not_before = now_ms() - self.config.cache_ttl_ms
        cached = await self.hs.db.run(media_store.get_preview, url, tenant_key, not_before)
        if cached is not None:
            return json.loads(cached)
        return await self._building.run((url, tenant_key), lambda: self._build(url, user_id, tenant_key))

    def _check_url(self, url: str) -> None:
        if len(url) > MAX_URL_LENGTH:
            raise MatrixError(400, "M_INVALID_PARAM", "url is too long")
        try:
            parts = urlsplit(url)
            host = parts.hostname
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise MatrixError(400, "M_INVALID_PARAM", "url is not a valid URL") from None
        if parts.scheme not in ("http", "https") or not host:
            raise MatrixError(400, "M_INVALID_PARAM", "url must be an http or https URL")
        literal = parse_ip(host)
        if literal is not None and not self.ip_filter.allows(str(literal)):
            raise forbidden("previews of this address are not allowed")

    async def _build(self, url: str, user_id: str, tenant_key: str) -> dict[str, Any]:
        try:
            page = await self._fetch(url, self.config.max_page_bytes, store=False)
        except _Blocked:
            raise MatrixError(502, "M_UNKNOWN", "could not fetch the URL") from None
        og: dict[str, Any] = {}
        base = content_types.base_type(page.content_type)
        if page.stored is not None:
            og.update(await self._keep_image(page, url, user_id))
        elif base in HTML_TYPES:
            og = parse_html(page.body, page.content_type, url)
            image_url = og.pop("og:image", None)
            if image_url:
                og.update(await self._image_of(image_url, user_id))
        await self.hs.db.run(media_store.put_preview, url, tenant_key, json.dumps(og), now_ms())
        return og

    async def _image_of(self, image_url: str, user_id: str) -> dict[str, Any]:
        """The page's og:image, kept as media; nothing when it cannot be fetched or is not
        an image we keep."""
        try:
            image = await self._fetch(image_url, self.hs.config.media.max_upload_bytes, store=True)
        except (_Blocked, MatrixError):
            return {}
        if image.stored is None:
            return {}
        return await self._keep_image(image, image_url, user_id)

    async def _keep_image(self, fetched: _Fetched, url: str, user_id: str) -> dict[str, Any]:
        repo = self.hs.media
        size = await repo.run_in_pool(_image_size, fetched.stored.path)
        name = unquote(os.path.basename(urlsplit(url).path))[:255] or None
        media_id = await repo.store_received(user_id, fetched.stored, fetched.content_type, name)
        og: dict[str, Any] = {"og:image": repo.mxc(media_id), "og:image:type": fetched.content_type,
                              "matrix:image:size": fetched.stored.size}
        if size is not None:
            og["og:image:width"], og["og:image:height"] = size
        return og

    async def _fetch(self, url: str, max_bytes: int, store: bool) -> _Fetched:
        """GET `url` within the time limit. An image response is streamed into the media
        store (when `store`, or when it is the page itself); a page is read up to
        `max_bytes` (a longer page is cut, its head is what counts)."""
        filtered = _FilteredReactor(reactor, self.ip_filter)
        agent = BrowserLikeRedirectAgent(
            Agent(filtered, connectTimeout=self.config.timeout_ms / 1000), redirectLimit=MAX_REDIRECTS)
        client = treq.client.HTTPClient(agent)
        d = defer.ensureDeferred(self._get(client, url, max_bytes, store))
        d.addTimeout(self.config.timeout_ms / 1000, reactor)
        try:
            return await d
        except MatrixError:
            raise
        except Exception as e:  # connection refused, DNS failure, timeout, TLS, bad response
            if filtered.blocked:
                raise _Blocked() from None
            logger.info("URL preview of %s failed: %r", url, e)
            raise MatrixError(502, "M_UNKNOWN", "could not fetch the URL") from None

    async def _get(self, client: Any, url: str, max_bytes: int, store: bool) -> _Fetched:
        response = await client.get(url, headers=Headers({
            b"User-Agent": [USER_AGENT], b"Accept": [b"text/html, image/*;q=0.9, */*;q=0.1"]}),
            allow_redirects=False)
        if response.code != 200:
            response.deliverBody(_Discard())
            raise MatrixError(502, "M_UNKNOWN", f"the URL answered HTTP {response.code}")
        raw_type = response.headers.getRawHeaders(b"content-type", [b""])[0].decode("latin-1")
        content_type = content_types.normalize(raw_type) or content_types.DEFAULT_TYPE
        base = content_types.base_type(content_type)
        is_image = base.startswith("image/") and content_types.is_allowed(
            content_type, self.hs.config.media.allowed_content_types)
        if is_image:
            return _Fetched(content_type, stored=await self._stream_to_store(response))
        if store or base not in HTML_TYPES:
            response.deliverBody(_Discard())  # nothing of it is used
            return _Fetched(content_type)
        chunks: list[bytes] = []
        got = 0

        def collect(data: bytes) -> None:
            nonlocal got
            room = max_bytes - got
            chunks.append(data[:room])
            got += min(len(data), room)
            if got >= max_bytes:
                raise _Enough()

        try:
            await treq.collect(response, collect)
        except _Enough:
            pass
        return _Fetched(content_type, body=b"".join(chunks))

    async def _stream_to_store(self, response: Any) -> Any:
        limit = self.hs.config.media.max_upload_bytes
        if response.length is not None and isinstance(response.length, int) and response.length > limit:
            response.deliverBody(_Discard())
            return None
        sink: UploadSink = self.hs.media.open_upload_sink()

        def write(data: bytes) -> None:
            if sink.size + len(data) > limit:
                raise _TooBig()
            sink.write(data)

        try:
            await treq.collect(response, write)
        except _TooBig:
            sink.close()
            return None
        except BaseException:
            sink.close()
            raise
        return await sink.finish()


class _Discard:
    """A body protocol that throws the body away and closes the connection."""

    def makeConnection(self, transport: Any) -> None:
        transport.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Any) -> None:
        pass


def _image_size(path: Any) -> tuple[int, int] | None:
    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # not an image Pillow reads: kept without dimensions
        return None


# The pushers reach users' push gateways through the same filter.
FilteredReactor = _FilteredReactor
