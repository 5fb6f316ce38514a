"""A JSON answer composed in one go (`LimitedRequest.answer_json`) carries each header
once and keeps twisted.web's framing; where a header of the fixed block was set before, or
the answer is not a plain HTTP/1.1 one with a body, twisted.web writes it instead."""
from __future__ import annotations

import pytest
from twisted.internet.testing import StringTransport
from twisted.web import resource, server

from client_api.http import ApiResource, LimitedChannel, LimitedRequest, Router


def _request(method: bytes = b"GET", proto: bytes = b"HTTP/1.1") -> tuple[LimitedRequest, StringTransport]:
    channel = LimitedChannel()
    channel.site = server.Site(resource.Resource())
    transport = StringTransport()
    channel.makeConnection(transport)
    request = LimitedRequest(channel, True)
    channel.requests.append(request)
    request.method, request.clientproto, request.uri, request.path = method, proto, b"/x", b"/x"
    request.setHeader(b"Server", b"test")
    return request, transport


def _head_and_body(raw: bytes) -> tuple[str, list[str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    return status, [line.split(":", 1)[0].lower() for line in lines], body


def _respond(request: LimitedRequest, status: int, body: dict) -> None:
    ApiResource(None, Router())._respond(request, status, body)  # type: ignore[arg-type]


@pytest.mark.parametrize("preset", [None, b"Content-Type", b"Access-Control-Allow-Origin", b"Content-Length"])
def test_each_header_once_whoever_writes_the_answer(preset):
    request, transport = _request()
    if preset is not None:
        request.setHeader(preset, b"preset")
    _respond(request, 200, {"ok": True})
    status, names, body = _head_and_body(transport.value())
    assert status == "HTTP/1.1 200 OK"
    assert len(names) == len(set(names)), names
    assert {"server", "content-type", "content-length", "cache-control", "access-control-allow-origin"} <= set(names)
    assert body == b'{"ok":true}'
    assert request.finished


def test_answer_json_declines_what_twisted_must_write():
    for method, proto, status in ((b"HEAD", b"HTTP/1.1", 200), (b"GET", b"HTTP/1.0", 200),
                                  (b"GET", b"HTTP/1.1", 204), (b"GET", b"HTTP/1.1", 304)):
        request, transport = _request(method, proto)
        assert not request.answer_json(status, b"{}"), (method, proto, status)
        assert transport.value() == b""
    request, transport = _request()
    request.setHeader(b"Content-Type", b"text/plain")
    assert not request.answer_json(200, b"{}")
    assert transport.value() == b""
    request, transport = _request()
    assert request.answer_json(404, b'{"errcode":"M_NOT_FOUND"}')
    status, names, body = _head_and_body(transport.value())
    assert status == "HTTP/1.1 404 Not Found" and names.count("content-length") == 1
    assert body == b'{"errcode":"M_NOT_FOUND"}'
