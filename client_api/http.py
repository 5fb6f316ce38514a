"""The HTTP surface: one Twisted resource that routes by method and path, parses JSON
bodies, authenticates the requester, adds CORS headers and turns every failure into a
Matrix error. Handlers are `async def handler(req, **path_params) -> (status, body)`, or
return a `DirectResponse` that writes itself (media files).

Request bodies: the route is looked up as soon as the headers are in, and chooses the
body's size limit and where it goes. Most routes buffer up to
`limits.max_request_body_bytes`; a route with a `StreamedBody` (media uploads) has its own
limit and streams into a sink. A declared Content-Length over the limit is answered 413
before any of the body is read; a chunked body that grows over it is cut off the same way."""
from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable
from urllib.parse import unquote

import orjson
from twisted.internet import defer, reactor, tcp
from twisted.python import failure
from twisted.web import http, server
from twisted.web.http import NO_BODY_CODES, RESPONSES, datetimeToString
from twisted.web.resource import Resource

from client_api import idle_sweep, request_log
from client_api.streaming import JsonLines
from homeserver import held_writes
from homeserver.errors import MatrixError
from homeserver.lru import LRU
from storage import accounts as accounts_store
from storage.accounts import TokenOwner
from storage.database import DatabaseUnavailable, NulCharacterError

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)

Handler = Callable[..., Awaitable[Any]]
CLIENT_PREFIX = "/_matrix/client/(?:v3|r0)"

CORS_HEADERS = {
    b"Access-Control-Allow-Origin": b"*",
    b"Access-Control-Allow-Methods": b"GET, HEAD, POST, PUT, DELETE, OPTIONS",
    b"Access-Control-Allow-Headers": b"X-Requested-With, Content-Type, Authorization, Date",
    b"Access-Control-Expose-Headers": b"Synapse-Trace-Id, Server",
}


@dataclass(frozen=True)
class StreamedBody:
    """A route whose body is streamed into a sink instead of buffered in memory.
    `limit(hs)` is its size limit; `open_sink(hs, producer)` returns the sink (written to
    chunk by chunk, closed to discard it; `producer` is the connection, to pause reading)."""
    limit: Callable[["HomeServer"], int]
    open_sink: Callable[["HomeServer", Any], Any]


@dataclass
class Route:
    method: str
    regex: re.Pattern
    handler: Handler
    auth: bool
    pattern: str = ""  # as registered, e.g. CLIENT_PREFIX + "/sync"
    body: StreamedBody | None = None
    max_body: int | None = None  # a buffered body limit of its own (federation transactions)
    # The requester's own rate limits, `await limit(req, **params)` after authentication:
    # counted by the process the request enters, before it is forwarded (docs/scaling.md).
    limit: Handler | None = None


class DirectResponse:
    """A handler result that writes its own response (status, headers, a streamed body)."""

    def send(self, request: server.Request) -> None:
        raise NotImplementedError


class Router:
    def __init__(self) -> None:
        self.routes: list[Route] = []
        # (method, path) -> match: a long-polling client asks for the same path again and
        # again, and walking every route's regex costs more than the rest of the routing.
        self._matched: LRU[tuple[str, str], tuple[Route | None, dict[str, str], bool]] = LRU(4096)

    def add(self, method: str, pattern: str, handler: Handler, auth: bool = True,
            body: StreamedBody | None = None, max_body: int | None = None, limit: Handler | None = None) -> None:
        """`pattern` is a regex source in which `{name}` stands for one path segment."""
        source = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern)
        self.routes.append(Route(method, re.compile("^" + source + "$"), handler, auth, pattern, body,
                                 max_body, limit))
        self._matched = LRU(4096)

    def client(self, method: str, path: str, handler: Handler, auth: bool = True,
               limit: Handler | None = None) -> None:
        self.add(method, CLIENT_PREFIX + path, handler, auth, limit=limit)

    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        """(route, params, path_known): path_known tells 405 apart from 404."""
        key = (method, path)
        found = self._matched.get(key)
        if found is None:
            found = self._match(method, path)
            self._matched.put(key, found)
        route, params, known = found
        return route, dict(params), known

    def _match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        path_known = False
        for route in self.routes:
            m = route.regex.match(path)
            if m:
                path_known = True
                if route.method == method or (method == "HEAD" and route.method == "GET"):
                    return route, {k: unquote(v) for k, v in m.groupdict().items()}, True
        return None, {}, path_known


@dataclass
class Requester:
    user_id: str
    device_id: str
    is_admin: bool
    access_token: str
    app_service: Any = None  # the Registration when an application service is asking
    is_guest: bool = False

    @property
    def device_key(self) -> str:
        return f"{self.user_id}|{self.device_id}"


@dataclass
class Req:
    hs: "HomeServer"
    method: str
    path: str
    args: dict[bytes, list[bytes]]  # as Twisted parsed them; `query` decodes what is asked for
    body: bytes
    headers: Any
    client_ip: str
    requester: Requester | None = None
    upload: Any = None  # the sink of a StreamedBody route, holding the received body
    _json: Any = field(default=None, repr=False)
    uri: bytes = b""  # the request target as sent (path and query), for X-Matrix signatures

    @property
    def user_id(self) -> str:
        assert self.requester is not None
        return self.requester.user_id

    def query(self, name: str, default: str | None = None) -> str | None:
        values = self.args.get(name.encode())
        return values[0].decode("utf-8", "replace") if values else default

    def query_list(self, name: str) -> list[str]:
        """Every value of a repeated query parameter (`?v=a&v=b`)."""
        return [v.decode("utf-8", "replace") for v in self.args.get(name.encode(), [])]

    def query_int(self, name: str, default: int | None = None) -> int | None:
        value = self.query(name)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError:
            raise MatrixError(400, "M_INVALID_PARAM", f"query parameter {name} must be an integer") from None

    def json(self, allow_empty: bool = False) -> dict[str, Any]:
        """The body as a JSON object: M_NOT_JSON if it does not parse, M_BAD_JSON if it is
        not an object."""
        if self._json is None:
            if not self.body.strip():
                if allow_empty:
                    self._json = {}
                    return self._json
                raise MatrixError(400, "M_NOT_JSON", "request body is empty; expected JSON")
            self._json = parse_json_body(self.body)
        return self._json


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json_body(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body.decode("utf-8"), parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise MatrixError(400, "M_NOT_JSON", "request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise MatrixError(400, "M_BAD_JSON", "request body must be a JSON object")
    return value


def encode_json(value: Any) -> bytes:
    # orjson: measured several times faster than the stdlib on sync responses.
    try:
        return orjson.dumps(value)
    except TypeError:  # lone surrogates stored by an earlier client, or big ints: escape them
        return json.dumps(value, separators=(",", ":"), default=_unfragment).encode("ascii")


def _unfragment(value: Any) -> Any:
    if isinstance(value, orjson.Fragment):
        return json.loads(orjson.dumps(value))
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def raw_response(status: int, reason: bytes, body: dict[str, Any]) -> bytes:
    """A whole HTTP/1.1 response that closes the connection, for answers given before the
    request has been read (and so before twisted.web's Request can respond)."""
    data = encode_json(body)
    head = [b"HTTP/1.1 %d %s" % (status, reason), b"Content-Type: application/json",
            b"Content-Length: %d" % len(data), b"Connection: close"]
    head += [k + b": " + v for k, v in CORS_HEADERS.items()]
    return b"\r\n".join(head) + b"\r\n\r\n" + data


_date_cache: tuple[int, bytes] = (0, b"")


def http_date() -> bytes:
    """The Date header's value, formatted once per second rather than once per response."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, datetimeToString(now))
    return _date_cache[1]


def put_headers(request: server.Request, headers: dict[bytes, bytes]) -> None:
    """Set response headers whose names and values are our own constants (already in
    Header-Case, without line breaks), skipping Twisted's per-call encoding and
    sanitising, which was a measurable share of answering a long-poll."""
    raw = getattr(request.responseHeaders, "_rawHeaders", None)
    if raw is None:  # a Twisted without the attribute: the public (slower) way
        for k, v in headers.items():
            request.setHeader(k, v)
        return
    for k, v in headers.items():
        raw[k] = [v]


class LimitedRequest(server.Request):
    """Holds its body within the limit its route chose (see LimitedChannel); a body that
    grows past it is refused at once."""
    max_body = 1_048_576
    _open_sink: Callable[[Any], Any] | None = None
    _received = 0
    refused = False
    # Router.match's answer for this request, found when its headers arrived.
    matched: tuple[Route | None, dict[str, str], bool] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Never parse form bodies into args: a body is JSON or a streamed upload, not a form.
        self._parsePOSTFormSubmission = False

    def process(self) -> None:
        """twisted.web's `process` for a site whose root resource is a leaf: the same
        default headers (Date formatted once a second) and no path traversal."""
        self.site = self.channel.site
        put_headers(self, {b"Server": server.version, b"Date": http_date()})
        self.prepath, self.postpath = [], []
        try:
            self.render(self.site.resource)
        except BaseException:
            self.processingFailed(failure.Failure())

    def _whole_answer_allowed(self) -> bool:
        """Whether the response may go out as one buffer composed here: a plain HTTP/1.1
        answer with a body, nothing written yet, none of Twisted's extra headers."""
        return not (self.startedWriting or self.finished or self._disconnected
                    or self.clientproto != b"HTTP/1.1" or self.method == b"HEAD"
                    or self.code in NO_BODY_CODES or self.lastModified is not None
                    or self.etag is not None or self.cookies)

    def _head(self, raw: dict[bytes, list[bytes]]) -> list[bytes]:
        """The status line and the header lines set so far."""
        head = [b"HTTP/1.1 %d %s\r\n" % (self.code, self.code_message)]
        head += [name + b": " + value + b"\r\n" for name, values in raw.items() for value in values]
        return head

    def _send_whole(self, head: list[bytes], data: bytes) -> None:
        self.startedWriting = 1
        self.sentLength += len(data)
        self.channel.write_now(b"".join(head) + data)

    def write(self, data: bytes) -> None:
        """The first write of a response with a Content-Length goes out as one buffer, head
        and body together (twisted.web hands the transport some forty pieces, each
        checked, and then the body); everything else is twisted.web's own `write`."""
        raw = getattr(self.responseHeaders, "_rawHeaders", None)
        if raw is None or b"Content-Length" not in raw or not self._whole_answer_allowed():
            super().write(data)
            return
        head = self._head(raw)
        head.append(b"\r\n")
        self._send_whole(head, data)

    def answer_json(self, status: int, data: bytes) -> bool:
        """Send a whole JSON answer: the headers set so far, then the fixed JSON ones
        (`JSON_HEADER_BLOCK`, pre-encoded), then the Content-Length and `data`. Composed
        here in one go: a woken long-poll's answer is one of thousands sent back to back.
        False (nothing done) where twisted.web must write it, or where a header set earlier
        shares a name with the block."""
        before = getattr(self, "before_answer", None)
        if before is not None:  # headers that depend on the moment of answering (forwarding.tell_position)
            try:
                before()
            except Exception:  # the answer goes out without them
                logger.exception("setting the answer's position headers failed")
        raw = getattr(self.responseHeaders, "_rawHeaders", None)
        self.code, self.code_message = status, RESPONSES.get(status, b"Unknown Status")
        if raw is None or not JSON_HEADER_NAMES.isdisjoint(raw) or not self._whole_answer_allowed():
            return False
        head = self._head(raw)
        head += [JSON_HEADER_BLOCK, b"Content-Length: %d\r\n\r\n" % len(data)]
        self._send_whole(head, data)
        return True

    def choose_body(self, max_body: int, open_sink: Callable[[Any], Any] | None) -> None:
        self.max_body = max_body
        self._open_sink = open_sink

    def gotLength(self, length: int | None) -> None:
        if self._open_sink is not None:
            self.content = self._open_sink(self.channel.transport)
        else:
            super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.refused:
            return
        self._received += len(data)
        if self._received > self.max_body:
            self.refused = True
            self.content.close()  # a sink discards what it stored
            self.channel.refuse_too_large()
            return
        self.content.write(data)


class LimitedChannel(http.HTTPChannel):
    """Asks the route for the body limit once the headers are in, and answers 413 at once
    when the declared length is over it, without reading the body."""
    # After the 413, the rest of the body is read and dropped for a while so the client
    # sees the answer instead of a connection reset; then the connection is cut.
    linger_seconds = 5.0
    _refused = False
    _linger_call: Any = None

    def allHeadersReceived(self) -> None:
        req = self.requests[-1]
        api: ApiResource | None = getattr(self.site, "api_resource", None)
        if api is not None:  # None: a listener without the client API (metrics only)
            method = self._command.decode("ascii", "replace")
            path = self._path.split(b"?", 1)[0].decode("utf-8", "replace")
            req.matched = api.router.match(method, path)
            req.choose_body(*api.body_rules(req.matched[0]))
        if self.length is not None and self.length > req.max_body:
            req.refused = True
            self.refuse_too_large()
            return
        super().allHeadersReceived()

    def refuse_too_large(self) -> None:
        if self._refused:
            return
        self._refused = True
        self.send_held()
        self.transport.write(raw_response(413, b"Payload Too Large", {
            "errcode": "M_TOO_LARGE", "error": "request body too large"}))
        self.transport.loseWriteConnection()
        self._linger_call = reactor.callLater(self.linger_seconds, self.transport.abortConnection)

    # A connection's addresses never change: Twisted asks the socket for every request.
    _host: Any = None
    _peer: Any = None

    def getHost(self) -> Any:
        if self._host is None:
            self._host = super().getHost()
        return self._host

    def getPeer(self) -> Any:
        if self._peer is None:
            self._peer = super().getPeer()
        return self._peer

    def write_now(self, data: bytes) -> None:
        """Send at once what fits in the socket when nothing is queued before it, so a
        whole answer costs one send() instead of registering the connection for writing,
        waiting a reactor turn and unregistering it; any rest is queued as usual. (Plain
        TCP only: a TLS transport encrypts what it is given first.) Inside a burst of
        woken long-polls the answer is held and sent with the burst's others at its end
        (`homeserver.held_writes`)."""
        if held_writes.holding() and type(self.transport) is tcp.Server:
            if self._held is None:
                self._held = [data]
                held_writes.register(self)
            else:
                self._held.append(data)
            return
        self.send_held()
        self._send_now(data)

    _held: list[bytes] | None = None

    def send_held(self) -> None:
        """Send what this connection holds (nothing if it holds nothing)."""
        held, self._held = self._held, None
        if held:
            self._send_now(b"".join(held))

    def _send_now(self, data: bytes) -> None:
        t = self.transport
        if type(t) is tcp.Server and t.connected and not t.disconnecting \
                and not t.dataBuffer and not t._tempDataBuffer:
            sent = t.writeSomeData(data)
            if isinstance(sent, int) and sent > 0:
                data = data[sent:]  # (an error: queue it all and let Twisted see the loss)
        if data:
            t.write(data)

    # Whatever else goes to the connection goes after what it holds.
    def writeHeaders(self, *args: Any) -> None:
        self.send_held()
        super().writeHeaders(*args)

    def write(self, data: bytes) -> None:
        self.send_held()
        super().write(data)

    def writeSequence(self, iovec: Any) -> None:
        self.send_held()
        super().writeSequence(iovec)

    def loseConnection(self) -> None:
        self.send_held()
        super().loseConnection()

    def requestDone(self, request: Any) -> None:
        # Twisted goes on to parse a pipelined request at once, and may answer it straight
        # to the socket (a 100 Continue, a 400 for a malformed one): what is held first.
        if self._held is not None and self._dataBuffer:
            self.send_held()
        super().requestDone(request)

    # The idle timeout: a time noted here and one sweep for every connection
    # (client_api.idle_sweep) instead of TimeoutMixin's timer per connection.
    idle_since = 0.0

    def connectionMade(self) -> None:
        idle_sweep.track(self)
        super().connectionMade()

    def setTimeout(self, period: float | None) -> float | None:
        previous, self.timeOut = self.timeOut, period
        self.idle_since = time.monotonic()
        return previous

    def resetTimeout(self) -> None:
        if self.timeOut is not None:
            self.idle_since = time.monotonic()

    def dataReceived(self, data: bytes) -> None:
        if not self._refused:
            super().dataReceived(data)

    def rawDataReceived(self, data: bytes) -> None:
        if not self._refused:
            super().rawDataReceived(data)

    def connectionLost(self, reason: Any) -> None:
        if self._linger_call is not None and self._linger_call.active():
            self._linger_call.cancel()
        idle_sweep.forget(self)
        super().connectionLost(reason)


class ApiResource(Resource):
    isLeaf = True

    def __init__(self, hs: "HomeServer", router: Router) -> None:
        super().__init__()
        self.hs = hs
        self.router = router

    def body_rules(self, route: Route | None) -> tuple[int, Callable[[Any], Any] | None]:
        """(size limit, sink opener or None) for the body of a request to `route`."""
        if route is not None and route.body is not None:
            streamed = route.body
            return streamed.limit(self.hs), lambda producer: streamed.open_sink(self.hs, producer)
        if route is not None and route.max_body is not None:
            return route.max_body, None
        return self.hs.config.limits.max_request_body_bytes, None

    def render(self, request: server.Request) -> int:
        defer.ensureDeferred(self._handle(request))
        return server.NOT_DONE_YET

    async def _handle(self, request: server.Request) -> None:
        method = request.method.decode("ascii", "replace")
        started = request_log.begin(request, self.hs)
        headers: dict[bytes, bytes] = {}
        try:
            result = await self._dispatch(request, method)
            if isinstance(result, DirectResponse):
                # It writes on after this returns (a file streams): the request ends, for
                # the access log and the in-flight count, when its response is finished.
                if request._disconnected:
                    request_log.end(request, self.hs, method, request.code, started)
                else:
                    request.notifyFinish().addBoth(
                        lambda _: request_log.end(request, self.hs, method, request.code, started))
                    result.send(request)
                return
            status, body = result
        except MatrixError as e:
            status, body = e.status, e.to_json()
            headers.update(getattr(e, "headers", None) or {})  # Retry-After of a 429
        except NulCharacterError:  # PostgreSQL text cannot hold NUL: a client error
            status, body = 400, {"errcode": "M_INVALID_PARAM",
                                 "error": "strings may not contain NUL characters"}
        except DatabaseUnavailable as e:  # an outage, not a bug: the client should retry
            logger.warning("database unavailable in %s %s: %s", method, request.path, e)
            status, body = 503, {"errcode": "M_UNKNOWN",
                                 "error": "the server's database is unavailable; retry shortly"}
            headers[b"Retry-After"] = str(e.retry_after_s).encode()
        except Exception:
            logger.exception("unhandled error in %s %s", method, request.path)
            status, body = 500, {"errcode": "M_UNKNOWN", "error": "internal server error"}
        if isinstance(body, JsonLines):
            try:
                await body.write_to(request, CORS_HEADERS, encode_json)
            except Exception:  # the status line is out: all we can do is cut the stream short
                logger.exception("streaming %s %s failed", method, request.path)
                if not request._disconnected:
                    request.loseConnection()
            request_log.end(request, self.hs, method, status, started)
        else:
            # Logged first: the answer leaves at once (`LimitedRequest.write`), and whoever
            # has it should find its access line already written.
            request_log.end(request, self.hs, method, status, started)
            self._respond(request, status, body, headers)

    async def _dispatch(self, request: server.Request, method: str) -> tuple[int, Any] | DirectResponse:
        path = request.path.decode("utf-8", "replace")
        if method == "OPTIONS":
            return 200, {}
        route, params, known = self._route_of(request, method, path)
        if route is None:
            if known:
                raise MatrixError(405, "M_UNRECOGNIZED", f"method {method} not allowed here")
            raise MatrixError(404, "M_UNRECOGNIZED", "unrecognized request")
        request.route_pattern = route.pattern
        req = self._req(request, route, method, path)
        if route.auth:
            req.requester = await authenticate(req)
            request.requester_user = req.requester.user_id
            if req.requester.is_guest:
                from client_api import guest_access  # imports this module
                await guest_access.check(req, route, params)
        if route.limit is not None and not getattr(request, "counted_upstream", False):
            await route.limit(req, **params)
        result = await route.handler(req, **params)
        if isinstance(result, (tuple, DirectResponse)):
            return result
        return 200, result

    def _route_of(self, request: server.Request, method: str, path: str) -> tuple[Route | None, dict[str, str], bool]:
        """The route, as matched when the request's headers arrived (LimitedChannel)."""
        return getattr(request, "matched", None) or self.router.match(method, path)

    def _req(self, request: server.Request, route: Route, method: str, path: str) -> "Req":
        upload, body = (request.content, b"") if route.body is not None else (None, b"")
        if upload is None:
            request.content.seek(0)
            body = request.content.read()
        return Req(self.hs, method, path, request.args, body, request.requestHeaders,
                   request.getClientAddress().host if request.getClientAddress() else "",
                   upload=upload, uri=request.uri)

    async def count_here(self, request: server.Request) -> bool:
        """Before another process answers the request: the requester's own rate limits
        (the route's `limit`) are counted here, where it entered, so a user's buckets live
        in the one process the proxy sends the user to. False when refused (answered)."""
        method = request.method.decode("ascii", "replace")
        path = request.path.decode("utf-8", "replace")
        route, params, _ = self._route_of(request, method, path)
        if route is None or route.limit is None or not route.auth:
            return True
        req = self._req(request, route, method, path)
        try:
            req.requester = await authenticate(req)
            await route.limit(req, **params)
        except MatrixError as e:  # refused here (the forwarder writes the access line)
            request.route_pattern, request.requester_user = route.pattern, req.user_id if req.requester else None
            request.setResponseCode(e.status)
            self._respond(request, e.status, e.to_json(), getattr(e, "headers", None))
            return False
        except Exception:  # the owner answers (its own errors) uncounted
            logger.exception("counting %s %s before forwarding it failed", method, path)
        return True

    def _respond(self, request: server.Request, status: int, body: Any,
                 headers: dict[bytes, bytes] | None = None) -> None:
        if request._disconnected:
            return
        data = encode_json(body)
        if not headers and isinstance(request, LimitedRequest) and request.answer_json(status, data):
            request.finish()
            return
        request.setResponseCode(status)
        put_headers(request, JSON_RESPONSE_HEADERS)
        for k, v in (headers or {}).items():
            request.setHeader(k, v)
        put_headers(request, {b"Content-Length": b"%d" % len(data)})
        if request.method != b"HEAD":
            request.write(data)
        request.finish()


JSON_RESPONSE_HEADERS = {**CORS_HEADERS, b"Content-Type": b"application/json",
                         b"Cache-Control": b"no-cache, no-store, must-revalidate"}
# The same, as header lines (LimitedRequest.answer_json).
JSON_HEADER_BLOCK = b"".join(k + b": " + v + b"\r\n" for k, v in JSON_RESPONSE_HEADERS.items())
JSON_HEADER_NAMES = frozenset(JSON_RESPONSE_HEADERS) | {b"Content-Length"}


def set_cors_headers(request: server.Request) -> None:
    put_headers(request, CORS_HEADERS)


def access_token_of(req: Req) -> str | None:
    header = req.headers.getRawHeaders(b"authorization")
    if header:
        value = header[0].decode("latin-1")
        if value.lower().startswith("bearer "):
            return value[7:].strip()
        raise MatrixError(401, "M_MISSING_TOKEN", "Authorization header must be 'Bearer <token>'")
    return req.query("access_token")


async def authenticate(req: Req) -> Requester:
    token = access_token_of(req)
    if not token:
        raise MatrixError(401, "M_MISSING_TOKEN", "missing access token")
    appservices = getattr(req.hs, "appservices", None)
    reg = appservices.by_token(token) if appservices is not None else None
    if reg is not None:
        return await _appservice_requester(req, reg, token)
    owner: TokenOwner | None = await req.hs.accounts.owner_of_token(token)
    if owner is None or owner.deactivated or owner.expired():
        raise MatrixError(401, "M_UNKNOWN_TOKEN", "unknown access token", soft_logout=False)
    req.hs.client_ips.seen(owner.user_id, owner.device_id, req.client_ip, req.headers)
    return Requester(owner.user_id, owner.device_id, owner.is_admin, token, is_guest=owner.is_guest)


async def _appservice_requester(req: Req, reg: Any, token: str) -> Requester:
    """An application service acts as its sender, or as `user_id` in its namespace, and
    optionally as one of that user's devices (`device_id`)."""
    user_id = req.query("user_id") or reg.sender(req.hs.server_name)
    if not req.hs.appservices.may_act_as(reg, user_id):
        raise MatrixError(403, "M_EXCLUSIVE", "the application service cannot act as this user")
    user = await req.hs.db.run(accounts_store.get_user, user_id)
    if user is None or user["deactivated"]:
        raise MatrixError(403, "M_FORBIDDEN", "the application service has not registered this user")
    device_id = req.query("device_id") or ""
    if device_id and not await req.hs.db.run(accounts_store.device_exists, user_id, device_id):
        raise MatrixError(400, "M_UNKNOWN_DEVICE", "no such device for this user")
    return Requester(user_id, device_id, bool(user["is_admin"]), token, app_service=reg)


def build_site(hs: "HomeServer", registrars: list[Callable[[Router], None]] | None = None) -> server.Site:
    """A site serving the routes the registrars add (default: the client-server API);
    the composition root passes the federation API's for federation listeners."""
    from client_api.routes import register_all_routes

    router = Router()
    for register in registrars if registrars is not None else [register_all_routes]:
        register(router)
    site = server.Site(ApiResource(hs, router))
    site.api_resource = site.resource  # LimitedChannel asks it for each request's body rules
    site.protocol = LimitedChannel
    site.requestFactory = LimitedRequest
    site.noisy = False
    return site
