"""Per-request bookkeeping around the router: a request id (returned in the
`X-Request-Id` header and tagged on every log line logged while serving the request),
one access-log line when the request is answered, and the HTTP metrics. The access
line names the route template, never a token: the `access_token` query parameter is
dropped from the logged path, and bodies and headers are not logged at all."""
from __future__ import annotations

import logging
import random
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode

from homeserver import metrics
from homeserver.logging_setup import REQUEST_ID

access_logger = logging.getLogger("homeserver.access")
REQUEST_ID_HEADER = b"X-Request-Id"
_SECRET_PARAMS = {"access_token"}


def loggable_path(uri: bytes) -> str:
    """The request's path and query string without secrets."""
    text = uri.decode("utf-8", "replace")
    path, sep, query = text.partition("?")
    if not sep:
        return path
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k not in _SECRET_PARAMS]
    return path + ("?" + urlencode(kept) if kept else "")


def begin(request: Any, hs: Any) -> float:
    """Give the request its id (in this coroutine's context and in the response headers);
    returns the start time for `end`."""
    # A request another process of the deployment forwarded keeps that process's id (the
    # header counts only where the internal secret was checked).
    given = request.getHeader(REQUEST_ID_HEADER) if getattr(request, "arrived_forwarded", False) else None
    rid = given.decode("ascii", "replace")[:32] if given else f"{random.getrandbits(64):016x}"
    REQUEST_ID.set(rid)
    request.request_id = rid
    request.setHeader(REQUEST_ID_HEADER, rid.encode())
    hs.requests_in_flight = getattr(hs, "requests_in_flight", 0) + 1
    return time.perf_counter()


def end(request: Any, hs: Any, method: str, status: int, started: float) -> None:
    hs.requests_in_flight -= 1
    duration = time.perf_counter() - started
    route = getattr(request, "route_pattern", None) or "unmatched"
    metrics.HTTP.observe(method, route, status, duration)
    if not access_logger.isEnabledFor(logging.INFO):
        return
    address = request.getClientAddress()
    ip = getattr(address, "host", "") or ""
    user = getattr(request, "requester_user", None) or "-"
    path = loggable_path(request.uri)
    # makeRecord + handle: what .info() does, without looking up the caller's frame.
    access_logger.handle(access_logger.makeRecord(
        access_logger.name, logging.INFO, __file__, 0, "%s %s %d %.3fs user=%s ip=%s route=%s",
        (method, path, status, duration, user, ip, route), None, "end",
        {"access": {"method": method, "route": route, "path": path, "status": status,
                    "duration_ms": round(duration * 1000, 3), "user": None if user == "-" else user, "ip": ip}}))
