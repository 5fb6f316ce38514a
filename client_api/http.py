"""The HTTP surface: one Twisted resource that routes by method and path, parses JSON
bodies, authenticates the requester, adds CORS headers and turns every failure into a
Matrix error. Handlers are `async def handler(req, **path_params) -> (status, body)`."""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable
from urllib.parse import unquote

import orjson
from twisted.internet import defer
from twisted.web import server
from twisted.web.resource import Resource

from homeserver.errors import MatrixError
from homeserver.lru import LRU
from storage import accounts as accounts_store
from storage.accounts import TokenOwner
from storage.database import NulCharacterError

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


@dataclass
class Route:
    method: str
    regex: re.Pattern
    handler: Handler
    auth: bool


class Router:
    def __init__(self) -> None:
        self.routes: list[Route] = []
        # (method, path) -> match: a long-polling client asks for the same path again and
        # again, and walking every route's regex costs more than the rest of the routing.
        self._matched: LRU[tuple[str, str], tuple[Route | None, dict[str, str], bool]] = LRU(4096)

    def add(self, method: str, pattern: str, handler: Handler, auth: bool = True) -> None:
        """`pattern` is a regex source in which `{name}` stands for one path segment."""
        source = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern)
        self.routes.append(Route(method, re.compile("^" + source + "$"), handler, auth))
        self._matched = LRU(4096)

    def client(self, method: str, path: str, handler: Handler, auth: bool = True) -> None:
        self.add(method, CLIENT_PREFIX + path, handler, auth)

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
    _json: Any = field(default=None, repr=False)

    @property
    def user_id(self) -> str:
        assert self.requester is not None
        return self.requester.user_id

    def query(self, name: str, default: str | None = None) -> str | None:
        values = self.args.get(name.encode())
        return values[0].decode("utf-8", "replace") if values else default

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


class LimitedRequest(server.Request):
    """Stops buffering a body beyond the configured size; the handler answers 413."""
    max_body = 1_048_576

    def gotLength(self, length):
        self.too_large = length is not None and length > self.max_body
        super().gotLength(length)

    def handleContentChunk(self, data):
        if getattr(self, "too_large", False):
            return
        if self.content.tell() + len(data) > self.max_body:
            self.too_large = True
            return
        super().handleContentChunk(data)


class ApiResource(Resource):
    isLeaf = True

    def __init__(self, hs: "HomeServer", router: Router) -> None:
        super().__init__()
        self.hs = hs
        self.router = router

    def render(self, request: server.Request) -> int:
        defer.ensureDeferred(self._handle(request))
        return server.NOT_DONE_YET

    async def _handle(self, request: server.Request) -> None:
        method = request.method.decode("ascii", "replace")
        try:
            status, body = await self._dispatch(request, method)
        except MatrixError as e:
            status, body = e.status, e.to_json()
        except NulCharacterError:  # PostgreSQL text cannot hold NUL: a client error
            status, body = 400, {"errcode": "M_INVALID_PARAM",
                                 "error": "strings may not contain NUL characters"}
        except Exception:
            logger.exception("unhandled error in %s %s", method, request.path)
            status, body = 500, {"errcode": "M_UNKNOWN", "error": "internal server error"}
        self._respond(request, status, body)

    async def _dispatch(self, request: server.Request, method: str) -> tuple[int, Any]:
        path = request.path.decode("utf-8", "replace")
        if method == "OPTIONS":
            return 200, {}
        route, params, known = self.router.match(method, path)
        if route is None:
            if known:
                raise MatrixError(405, "M_UNRECOGNIZED", f"method {method} not allowed here")
            raise MatrixError(404, "M_UNRECOGNIZED", "unrecognized request")
        if getattr(request, "too_large", False):
            raise MatrixError(413, "M_TOO_LARGE", "request body too large")
        request.content.seek(0)
        req = Req(self.hs, method, path, request.args, request.content.read(), request.requestHeaders,
                  request.getClientAddress().host if request.getClientAddress() else "")
        if route.auth:
            req.requester = await authenticate(req)
        result = await route.handler(req, **params)
        if isinstance(result, tuple):
            return result
        return 200, result

    def _respond(self, request: server.Request, status: int, body: Any) -> None:
        if request._disconnected:
            return
        data = encode_json(body)
        request.setResponseCode(status)
        for k, v in CORS_HEADERS.items():
            request.setHeader(k, v)
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Cache-Control", b"no-cache, no-store, must-revalidate")
        request.setHeader(b"Content-Length", str(len(data)).encode())
        if request.method != b"HEAD":
            request.write(data)
        request.finish()


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
    if owner is None or owner.deactivated:
        raise MatrixError(401, "M_UNKNOWN_TOKEN", "unknown access token", soft_logout=False)
    return Requester(owner.user_id, owner.device_id, owner.is_admin, token)


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


class _Site(server.Site):
    def log(self, request) -> None:
        """No Twisted access log: nothing reads it (our logging is the stdlib's), and
        formatting a line per request was a measurable share of answering a long-poll."""


def build_site(hs: "HomeServer") -> server.Site:
    from client_api.routes import register_all_routes

    router = Router()
    register_all_routes(router)
    site = _Site(ApiResource(hs, router))
    LimitedRequest.max_body = hs.config.limits.max_request_body_bytes
    site.requestFactory = LimitedRequest
    site.noisy = False
    return site
