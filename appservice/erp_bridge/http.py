"""The bridge's HTTP surface: a tiny router on twisted.web, JSON bodies, bearer-token
checks, and errors as JSON `{"errcode", "error"}`. Handlers are `async def` functions
taking (request, **path_params) and returning (status, json-able body)."""
from __future__ import annotations

import hmac
import json
import logging
import re
from typing import Any, Awaitable, Callable
from urllib.parse import unquote

from pydantic import BaseModel, ValidationError
from twisted.internet import defer
from twisted.web import resource, server
from twisted.web.iweb import IRequest

from appservice.erp_bridge.errors import ApiError

logger = logging.getLogger(__name__)
MAX_BODY_BYTES = 1_048_576

Handler = Callable[..., Awaitable[tuple[int, Any]]]


class Streamed:
    """The handler wrote (or is writing) the response itself."""


class LimitedRequest(server.Request):
    """Keeps at most `max_body_bytes` of a request body (the site sets it): a larger one
    is dropped while it arrives and the request answered 413, so nobody can fill the
    bridge's memory or disk."""

    max_body_bytes = MAX_BODY_BYTES
    too_large = False

    def gotLength(self, length):  # type: ignore[override]
        if length is not None and length > self.max_body_bytes:
            self.too_large = True
            length = 0
        super().gotLength(length)
        self._received = 0

    def handleContentChunk(self, data: bytes) -> None:
        self._received = getattr(self, "_received", 0) + len(data)
        if self._received > self.max_body_bytes:
            self.too_large = True
        if not self.too_large:
            super().handleContentChunk(data)


class RawBody:
    """A non-JSON response body."""

    def __init__(self, data: bytes, content_type: str) -> None:
        self.data = data
        self.content_type = content_type


def bearer_token(request: IRequest, allow_query: bool = False) -> str | None:
    """The token of `Authorization: Bearer`, or (for the homeserver's legacy style) of the
    `access_token` query parameter. Both given and different: refused."""
    header = request.getHeader(b"authorization")
    from_header = None
    if header:
        parts = header.decode("latin-1").split(None, 1)
        if len(parts) == 2 and parts[0].lower() == "bearer":
            from_header = parts[1].strip()
        else:
            raise ApiError(401, "M_MISSING_TOKEN", "Authorization header must be 'Bearer <token>'")
    from_query = None
    if allow_query:
        values = request.args.get(b"access_token")
        if values:
            from_query = values[0].decode("utf-8", "replace")
    if from_header and from_query and not hmac.compare_digest(from_header, from_query):
        raise ApiError(403, "M_FORBIDDEN", "Authorization header and access_token disagree")
    return from_header or from_query


def check_token(request: IRequest, expected: str, allow_query: bool = False) -> None:
    token = bearer_token(request, allow_query)
    if not token:
        raise ApiError(401, "M_MISSING_TOKEN", "missing access token")
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise ApiError(403, "M_FORBIDDEN", "invalid access token")


def read_json(request: IRequest, max_bytes: int = MAX_BODY_BYTES) -> Any:
    request.content.seek(0)
    raw = request.content.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ApiError(413, "M_TOO_LARGE", "request body too large")
    if not raw.strip():
        raise ApiError(400, "M_NOT_JSON", "request body must be JSON")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "M_NOT_JSON", "request body is not valid JSON") from None


def read_optional_json(request: IRequest) -> Any:
    """The JSON body, or {} when there is none."""
    request.content.seek(0)
    if not request.content.read(MAX_BODY_BYTES + 1).strip():
        return {}
    return read_json(request)


def parse_body(request: IRequest, model: type[BaseModel]) -> Any:
    data = read_json(request)
    if not isinstance(data, dict):
        raise ApiError(400, "M_BAD_JSON", "request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ApiError(400, "M_BAD_JSON", describe_validation(e)) from None


def describe_validation(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "body"
        msg = e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        parts.append(f"{key}: {msg}")
    return "; ".join(parts)


def query_arg(request: IRequest, name: str) -> str | None:
    values = request.args.get(name.encode())
    return values[0].decode("utf-8", "replace") if values else None


class Router(resource.Resource):
    """Routes on the raw path (percent-decoded per segment), so ids with `/`-free but
    otherwise arbitrary characters (user ids, aliases) reach the handler intact."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self._routes: list[tuple[re.Pattern, dict[str, Handler]]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        """`pattern` like /_erp/v1/tenants/{tenant_id}; each {name} matches one segment."""
        parts = re.split(r"\{(\w+)\}", pattern)  # literal, name, literal, name, ...
        regex = "^" + "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)"
                              for i, p in enumerate(parts)) + "/?$"
        for compiled, methods in self._routes:
            if compiled.pattern == regex:
                methods[method] = handler
                return
        self._routes.append((re.compile(regex), {method: handler}))

    def render(self, request: server.Request):  # type: ignore[override]
        if getattr(request, "too_large", False):
            request.setHeader(b"connection", b"close")
            return self._finish(request, 413, {"errcode": "M_TOO_LARGE", "error": "request body too large"})
        path = request.path.decode("latin-1")
        method = request.method.decode("ascii", "replace")
        for compiled, methods in self._routes:
            m = compiled.match(path)
            if not m:
                continue
            handler = methods.get(method)
            if handler is None:
                return self._finish(request, 405, {"errcode": "M_UNRECOGNIZED",
                                                   "error": f"{method} is not supported here"})
            params = {k: unquote(v) for k, v in m.groupdict().items()}
            d = defer.ensureDeferred(self._run(request, handler, params))
            d.addErrback(lambda f: logger.error("unhandled: %s", f.getTraceback()))
            return server.NOT_DONE_YET
        return self._finish(request, 404, {"errcode": "M_UNRECOGNIZED", "error": "unrecognized request"})

    async def _run(self, request: server.Request, handler: Handler, params: dict[str, str]) -> None:
        finished = []
        request.notifyFinish().addBoth(lambda _: finished.append(True))
        try:
            status, body = await handler(request, **params)
        except ApiError as e:
            status, body = e.status, e.body()
        except Exception:
            logger.exception("error handling %s %s", request.method.decode(), request.path.decode())
            status, body = 500, {"errcode": "M_UNKNOWN", "error": "internal error"}
        if not finished and not isinstance(body, Streamed):
            self._finish(request, status, body)

    @staticmethod
    def _finish(request: server.Request, status: int, body: Any) -> bytes | int:
        if isinstance(body, RawBody):
            data, content_type = body.data, body.content_type
        else:
            data, content_type = json.dumps(body).encode(), "application/json"
        request.setResponseCode(status)
        request.setHeader(b"content-type", content_type.encode())
        request.setHeader(b"content-length", str(len(data)).encode())
        if request.startedWriting:
            return b""
        if request.method == b"HEAD":
            request.finish()
            return server.NOT_DONE_YET
        request.write(data)
        request.finish()
        return server.NOT_DONE_YET
