"""Streamed responses: a handler returns `JsonLines(pages)` where `pages` is an async
iterator of lists of JSON values; each value goes out as one line as soon as its page is
read, so a big export is never built in memory. Writing waits while the client's
connection is backed up (Twisted's producer/consumer flow control), so a slow reader
holds back the database reads instead of filling memory."""
from __future__ import annotations

from typing import Any, AsyncIterator

from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

CONTENT_TYPE = b"application/x-ndjson; charset=utf-8"


@implementer(IPushProducer)
class _FlowControl:
    """Registered with the request: the transport pauses us when its buffer is full."""

    def __init__(self) -> None:
        self.paused: defer.Deferred | None = None
        self.stopped = False

    def pauseProducing(self) -> None:
        if self.paused is None:
            self.paused = defer.Deferred()

    def resumeProducing(self) -> None:
        d, self.paused = self.paused, None
        if d is not None:
            d.callback(None)

    def stopProducing(self) -> None:  # the client went away
        self.stopped = True
        self.resumeProducing()


class JsonLines:
    def __init__(self, pages: AsyncIterator[list[Any]], filename: str | None = None) -> None:
        self.pages = pages
        self.filename = filename

    async def write_to(self, request: Any, headers: dict[bytes, bytes], encode) -> None:
        request.setResponseCode(200)
        for k, v in headers.items():
            request.setHeader(k, v)
        request.setHeader(b"Content-Type", CONTENT_TYPE)
        request.setHeader(b"Cache-Control", b"no-cache, no-store, must-revalidate")
        if self.filename:
            request.setHeader(b"Content-Disposition", f'attachment; filename="{self.filename}"'.encode())
        flow = _FlowControl()
        request.registerProducer(flow, True)
        try:
            async for page in self.pages:
                if flow.stopped or request._disconnected:
                    break
                if page:
                    request.write(b"".join(encode(value) + b"\n" for value in page))
                if flow.paused is not None:
                    await flow.paused
        finally:
            await _close(self.pages)
            request.unregisterProducer()
            if not request._disconnected:
                request.finish()


async def _close(pages: Any) -> None:
    aclose = getattr(pages, "aclose", None)
    if aclose is not None:
        await aclose()
