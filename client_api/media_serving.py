"""Serving media files safely: the headers that keep uploaded content from running as a
page (Content-Disposition, Content-Security-Policy, nosniff), single byte ranges (206/416)
so players can seek, and the bytes streamed from disk by a worker thread, a chunk at a
time and only as fast as the client reads them."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from twisted.internet import reactor, threads
from twisted.internet.interfaces import IPushProducer
from twisted.web import server
from zope.interface import implementer

from client_api.http import DirectResponse, set_cors_headers
from homeserver.media.content_types import base_type

CSP = (b"sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; "
       b"style-src 'unsafe-inline'; media-src 'self'; object-src 'self';")

# Served `inline` (shown in the browser); everything else is an `attachment`. Types a
# browser cannot run as a document: raster images (no SVG, which holds scripts), plain
# text and data, common audio and video. PDF is left out (viewers have run scripts).
INLINE_TYPES = frozenset({
    "text/plain", "text/csv", "text/css", "application/json", "application/ld+json",
    "image/jpeg", "image/gif", "image/png", "image/apng", "image/webp", "image/avif",
    "video/mp4", "video/webm", "video/ogg", "video/quicktime",
    "audio/mp4", "audio/webm", "audio/aac", "audio/mpeg", "audio/ogg", "audio/wave",
    "audio/wav", "audio/x-wav", "audio/x-pn-wav", "audio/flac", "audio/x-flac",
})
CHUNK = 256 * 1024
_QUOTABLE = re.compile(r"[\x20-\x7e]*")


def disposition(content_type: str, filename: str | None, force_inline: bool = False) -> str:
    """`inline` or `attachment`, with the file name: plain quoted when it is printable
    ASCII, else RFC 5987 `filename*=utf-8''...` (percent-encoded, so no header injection)."""
    kind = "inline" if force_inline or base_type(content_type) in INLINE_TYPES else "attachment"
    if not filename:
        return kind
    if _QUOTABLE.fullmatch(filename) and '"' not in filename and "\\" not in filename:
        return f'{kind}; filename="{filename}"'
    return f"{kind}; filename*=utf-8''{quote(filename, safe='')}"


def served_type(content_type: str) -> str:
    """Text without a charset is declared UTF-8, so browsers do not guess."""
    if base_type(content_type).startswith("text/") and "charset" not in content_type.lower():
        return content_type + "; charset=utf-8"
    return content_type


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | bool:
    """One `bytes=` range of a `size`-byte file as (first, last) inclusive; None to serve
    the whole file (no header, a header we ignore, several ranges); False when the range
    cannot be satisfied (416)."""
    if not header:
        return None
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if m is None:
        return None  # other units, several ranges, or garbage: RFC 9110 lets us ignore it
    first_s, last_s = m.groups()
    if not first_s and not last_s:
        return None
    if not first_s:  # suffix: the last N bytes
        n = int(last_s)
        if n == 0 or size == 0:
            return False
        return max(0, size - n), size - 1
    first = int(first_s)
    last = int(last_s) if last_s else size - 1
    if last_s and last < first:
        return None  # invalid range: ignore it
    if first >= size:
        return False
    return first, min(last, size - 1)


@dataclass
class FileResponse(DirectResponse):
    path: Path
    size: int
    content_type: str
    disposition: str
    pool: Any

    def send(self, request: server.Request) -> None:
        set_cors_headers(request)
        request.setHeader(b"Content-Type", served_type(self.content_type).encode("ascii"))
        request.setHeader(b"Content-Disposition", self.disposition.encode("ascii"))
        request.setHeader(b"Content-Security-Policy", CSP)
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(b"Cross-Origin-Resource-Policy", b"cross-origin")
        request.setHeader(b"Cache-Control", b"private, max-age=86400")
        request.setHeader(b"Accept-Ranges", b"bytes")
        header = request.getHeader(b"range")
        wanted = parse_range(header.decode("latin-1") if header else None, self.size)
        if wanted is False:
            request.setResponseCode(416)
            request.setHeader(b"Content-Range", b"bytes */%d" % self.size)
            request.setHeader(b"Content-Length", b"0")
            request.finish()
            return
        first, last = wanted if wanted else (0, self.size - 1)
        length = last - first + 1 if self.size else 0
        if wanted:
            request.setResponseCode(206)
            request.setHeader(b"Content-Range", b"bytes %d-%d/%d" % (first, last, self.size))
        request.setHeader(b"Content-Length", b"%d" % length)
        if request.method == b"HEAD" or length == 0:
            request.finish()
            return
        FileStreamer(request, self.path, first, length, self.pool).start()


@implementer(IPushProducer)
class FileStreamer:
    """Reads `length` bytes from `offset` on the thread pool and writes them to the
    request; the transport pauses it while its buffer is full."""

    def __init__(self, request: server.Request, path: Path, offset: int, length: int, pool: Any) -> None:
        self.request, self.path, self.offset, self.remaining, self.pool = request, path, offset, length, pool
        self._file: Any = None
        self._paused = False
        self._reading = False
        self._stopped = False

    def start(self) -> None:
        self.request.registerProducer(self, True)
        self.request.notifyFinish().addErrback(lambda _: self.stopProducing())
        self._read_next()

    def _read_next(self) -> None:
        if self._paused or self._reading or self._stopped:
            return
        self._reading = True
        d = threads.deferToThreadPool(reactor, self.pool, self._read, min(CHUNK, self.remaining))
        d.addCallbacks(self._got, self._failed)

    def _read(self, n: int) -> bytes:  # worker thread
        if self._file is None:
            self._file = open(self.path, "rb")
            self._file.seek(self.offset)
        return self._file.read(n)

    def _got(self, data: bytes) -> None:
        self._reading = False
        if self._stopped:
            self._close()
            return
        if not data:  # the file is shorter than recorded: end the response early
            self._failed(None)
            return
        self.remaining -= len(data)
        self.request.write(data)  # may pause us
        if self.remaining <= 0:
            self._stopped = True
            self.request.unregisterProducer()
            self.request.finish()
            self._close()
        else:
            self._read_next()

    def _failed(self, failure: Any) -> None:
        self._reading = False
        self._stopped = True
        self._close()
        if not self.request._disconnected:
            self.request.unregisterProducer()
            self.request.loseConnection()  # the length was promised: cut the connection

    def _close(self) -> None:
        if self._file is not None:
            f, self._file = self._file, None
            threads.deferToThreadPool(reactor, self.pool, f.close)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._read_next()

    def stopProducing(self) -> None:
        self._stopped = True
        if not self._reading:
            self._close()
