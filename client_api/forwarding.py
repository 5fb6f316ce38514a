"""Several processes (docs/scaling.md): which process serves a request, and forwarding
it there. A room's events are built by the writer that owns the room (homeserver/
sharding.py); the per-user streams (sync, typing, receipts, account data, to-device,
keys and devices, presence, pushers, logins) by the one `worker.streams` instance; every
other request (reads) wherever it arrives. A process answers what it owns and forwards
the rest, with the user's own credentials, to the owner's `internal` listener, so a
reverse proxy only needs to spread requests (and may send /sync straight to the owner).
A forwarded request is never forwarded again."""
from __future__ import annotations

import hmac
import ipaddress
import logging
import re
from io import BytesIO
from typing import TYPE_CHECKING
from urllib.parse import unquote

from twisted.internet import defer, reactor
from twisted.web import server
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers

from client_api import request_log
from homeserver.internal_http import SECRET_HEADER
from homeserver.writer_layout import LAYOUT_HEADER
from sync import stream_followers
from sync.stream_followers import STREAMS_HEADER

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)
FORWARDED_HEADER = b"X-Homeserver-Forwarded"
POSITION_HEADER = b"X-Homeserver-Position"
_PASSED_HEADERS = (b"authorization", b"content-type", b"user-agent", b"accept")
_NOT_RETURNED = (b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"date", b"server",
                 b"x-homeserver-position", b"x-homeserver-layout", b"x-homeserver-streams")

_CLIENT = r"^/_matrix/client/(?:v3|r0|v1|unstable(?:/[^/]+)?)/"
# Writes to one room: the writer of the room builds them.
_ROOM_WRITE = re.compile(
    _CLIENT + r"rooms/(?P<room>[^/]+)/(?:send|state|redact)(?:/|$)|"
    + _CLIENT + r"rooms/(?P<room2>[^/]+)/(?:join|leave|invite|kick|ban|unban|knock|forget|upgrade)$|"
    + _CLIENT + r"(?:join|knock)/(?P<room3>[^/]+)$")
_CREATE_ROOM = re.compile(_CLIENT + r"createRoom$")
# The admin API's room deletion and history purge change the room's heads: its writer.
_ADMIN_ROOM_WRITE = re.compile(r"^/_synapse/admin/v[12]/rooms/(?P<room>[^/]+)$|"
                               r"^/_synapse/admin/v1/purge_history/(?P<room2>[^/]+)(?:/[^/]+)?$")
# Reading the streams: any sync process answers (the stream owner or one following it).
_SYNC_READ = re.compile(
    _CLIENT + r"(?:sync|events|initialSync|org\.matrix\.simplified_msc3575/sync|org\.matrix\.msc3575/sync)$|"
    + _CLIENT + r"rooms/[^/]+/initialSync$")
# A user's presence, set and read where it is kept (the stream owner unless its job is
# elsewhere; the sync processes mirror it for /sync).
_PRESENCE = re.compile(_CLIENT + r"presence/[^/]+/status$")
_THUMBNAIL = re.compile(r"^/_matrix/(?:client/v1/media|media/(?:v3|r0))/thumbnail/")
# The per-user streams, what writes to them, and /notifications (its read markers are the
# unread counts the stream owner keeps with the receipts).
_STREAMS = re.compile(
    _CLIENT + r"(?:sync|events|initialSync|login|logout|register|keys|devices|delete_devices"
    r"|sendToDevice|presence|pushers|pushrules|notifications|account|profile|org\.matrix\.simplified_msc3575"
    r"|org\.matrix\.msc3575)(?:/|$)|"
    + _CLIENT + r"rooms/[^/]+/(?:typing|receipt|read_markers|initialSync)(?:/|$)|"
    + _CLIENT + r"user/[^/]+/(?:account_data|rooms|filter)(?:/|$)")

WRITE_METHODS = (b"PUT", b"POST", b"DELETE")
MOVED_RETRIES = 3  # a room moving between writers: ask its new owner


def classify(method: bytes, path: str) -> tuple[str, str | None] | None:
    """What owns a request: ("room", room id or alias), ("create", None), ("sync", None)
    (any sync process), ("streams", None), ("presence", None), ("thumbnails", None), or
    None (any process answers it)."""
    if method in WRITE_METHODS:
        m = _ROOM_WRITE.match(path)
        if m:
            return "room", unquote(m.group("room") or m.group("room2") or m.group("room3"))
        m = _ADMIN_ROOM_WRITE.match(path) if method in (b"DELETE", b"POST") else None
        if m:
            return "room", unquote(m.group("room") or m.group("room2"))
        if method == b"POST" and _CREATE_ROOM.match(path):
            return "create", None
    if method in (b"GET", b"PUT") and _PRESENCE.match(path):
        return "presence", None
    if method in (b"GET", b"POST") and _SYNC_READ.match(path):
        return "sync", None
    if _STREAMS.match(path):
        return "streams", None
    if _THUMBNAIL.match(path):
        return "thumbnails", None
    return None


def secret_ok(hs: "HomeServer", request: server.Request) -> bool:
    secret = hs.config.worker.internal_secret
    given = request.getHeader(SECRET_HEADER)
    return bool(secret) and given is not None and hmac.compare_digest(given, secret.encode())


def mark_forwarded(request: server.Request) -> None:
    """On an internal listener (the secret checked): the client's address is the one the
    forwarding process saw, a forwarded request is answered here (never forwarded again)
    and its own rate limits were counted where it entered (`ApiResource.count_here`).
    Only here: on a public listener a client could send the header itself."""
    trust_forwarded_address(request)
    if request.getHeader(FORWARDED_HEADER) is not None:
        request.counted_upstream = True
        request.arrived_forwarded = True


def trust_forwarded_address(request: server.Request) -> None:
    """The client's address is the first in X-Forwarded-For (set by a trusted sender: a
    process of the deployment, or the proxy in front of an `x_forwarded` listener), for
    rate limits, device IPs and the audit log."""
    from twisted.internet.address import IPv4Address, IPv6Address
    given = request.getHeader(b"x-forwarded-for")
    if given:
        host = given.decode("ascii", "replace").split(",")[0].strip()
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return  # not an address: the connection's stands
        request.client = (IPv6Address if ":" in host else IPv4Address)("TCP", host, 0)


def tell_position(request: server.Request, hs: "HomeServer") -> None:
    """A writer's answer carries the highest id it has committed, or seen committed, when
    the answer starts (so after the request's own events, and after any it handed to
    another writer): the forwarding process waits for that. The stream owner's answer
    carries its per-user stream positions, for a sync process following them."""
    owns_streams = hs.config.worker.owns_streams
    # Only when the streams moved while the request was answered (a write): a read sent on
    # by a sync process following them must not wait for anything.
    streams_before = stream_followers.positions_header(hs) if owns_streams else b""

    def set_headers() -> None:
        if hs.persister.multi_writer is not None:
            position = max(hs.persister.last_written, hs.replication.replayed)
            request.setHeader(POSITION_HEADER, str(position).encode())
        if owns_streams:
            streams = stream_followers.positions_header(hs)
            if streams != streams_before:
                request.setHeader(STREAMS_HEADER, streams)

    request.before_answer = set_headers  # a JSON answer sent whole (LimitedRequest.answer_json)
    write = request.write

    def write_with_position(data: bytes) -> None:
        if not request.startedWriting:
            set_headers()
        write(data)
    request.write = write_with_position  # type: ignore[method-assign]


class Forwarder:
    def __init__(self, hs: "HomeServer") -> None:
        self.hs = hs
        self.cfg = hs.config.worker
        self._agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=True))
        self._next_creator = 0

    async def target(self, request: server.Request) -> str | None:
        """The instance to forward to, or None to answer here."""
        if getattr(request, "arrived_forwarded", False):
            return None
        found = classify(request.method, request.path.decode("utf-8", "replace"))
        if found is None:
            return None
        return await self._owner(*found)

    async def _owner(self, kind: str, room: str | None) -> str | None:
        me = self.cfg.instance_name
        if kind == "sync":
            owner = None if self.cfg.role == "sync" else self.cfg.streams
        elif kind == "streams":
            owner = self.cfg.streams
        elif kind == "presence":
            owner = self.cfg.jobs.presence or self.cfg.streams
        elif kind == "thumbnails":
            owner = self.cfg.jobs.thumbnails  # None: made wherever asked
        elif kind == "create":
            creators = self.hs.writer_layout.creators()
            if me in creators:
                return None
            owner = creators[self._next_creator % len(creators)]
            self._next_creator += 1
        else:
            room_id = await self._room_id(room or "")
            if room_id is None:
                return None  # answered here: a malformed or unknown alias gets its error
            owner = self.hs.writer_layout.owner(room_id)
        return None if owner is None or owner == me else owner

    async def _room_id(self, room: str) -> str | None:
        if room.startswith("!"):
            return room
        if room.startswith("#"):
            from storage import directory as directory_store
            try:
                found = await self.hs.db.run(directory_store.get_alias, room)
            except Exception:
                return None
            return found[0] if found else None
        return None

    async def forward(self, request: server.Request, owner: str) -> None:
        for _ in range(MOVED_RETRIES):
            answered = await self._forward_once(request, owner)
            if answered is None:
                return
            # The writer gave the room up meanwhile (homeserver/writer_layout.py): nothing
            # was built; once this process knows the new layout, ask the new owner.
            await self.hs.writer_layout.after_moved(answered)
            found = classify(request.method, request.path.decode("utf-8", "replace"))
            new_owner = await self._owner(*found) if found else None
            if new_owner is None:
                break  # this process's own (a writer forwarding): the client tries again
            owner = new_owner
        await self._forward_once(request, owner, last=True)

    async def _forward_once(self, request: server.Request, owner: str, last: bool = False) -> int | None:
        """Forward and answer; or, when the owner says the room moved (and this is not the
        last try), the layout generation it named, leaving the request unanswered."""
        base = self.hs.writer_layout.url(owner).rstrip("/")
        url = base.encode() + request.uri
        headers = Headers()
        for name, values in request.requestHeaders.getAllRawHeaders():
            if name.lower() in _PASSED_HEADERS:
                headers.setRawHeaders(name, values)
        # The address this process trusts (on an internal listener, the one it was told).
        address = request.getClientAddress()
        if getattr(address, "host", None):
            headers.setRawHeaders(b"X-Forwarded-For", [address.host.encode()])
        headers.setRawHeaders(SECRET_HEADER, [(self.cfg.internal_secret or "").encode()])
        headers.setRawHeaders(FORWARDED_HEADER, [self.cfg.instance_name.encode()])
        rid = getattr(request, "request_id", None)
        if rid:
            headers.setRawHeaders(request_log.REQUEST_ID_HEADER, [rid.encode()])
        request.content.seek(0)
        body = request.content.read()
        try:
            response = await self._agent.request(
                request.method, url, headers, FileBodyProducer(BytesIO(body)) if body else None)
            payload = await readBody(response)
        except Exception as e:
            logger.warning("forwarding %s %s to %s failed: %s", request.method.decode(), request.path.decode(
                "utf-8", "replace"), owner, e)
            if not request._disconnected:
                request.setResponseCode(503)
                request.setHeader(b"Content-Type", b"application/json")
                request.setHeader(b"Retry-After", b"2")
                request.write(b'{"errcode":"M_UNKNOWN","error":"the process serving this is unavailable"}')
                request.finish()
            return None
        moved = response.headers.getRawHeaders(LAYOUT_HEADER)
        if moved and response.code == 503 and not last:
            return int(moved[0])
        if request.method in WRITE_METHODS and response.code == 200 and self.hs.replication is not None:
            # The client reads its own write from here on: wait until this process has it.
            position = response.headers.getRawHeaders(POSITION_HEADER)
            if position:
                await self.hs.replication.wait_until(int(position[0]))
            else:  # not a writer's answer (the stream owner may have written to rooms)
                await self.hs.replication.catch_up_with_writers()
            streams = response.headers.getRawHeaders(STREAMS_HEADER)
            if streams:  # and what it wrote to the per-user streams, on a sync process following them
                await stream_followers.catch_up(self.hs, streams[0])
        if request._disconnected:
            return None
        request.setResponseCode(response.code)
        for name, values in response.headers.getAllRawHeaders():
            if name.lower() not in _NOT_RETURNED:
                request.responseHeaders.setRawHeaders(name, values)
        request.write(payload)
        request.finish()
        return None

    def render(self, request: server.Request, api) -> int:
        """Forward `request` if another process owns it (after counting the requester's
        own rate limits here), else let `api` (client_api.http.ApiResource) answer it."""
        async def run() -> None:
            try:
                owner = await self.target(request)
            except Exception:
                logger.exception("routing a request failed")
                owner = None
            if owner is None:
                result = api.render(request)
                if isinstance(result, bytes) and not request._disconnected:
                    request.write(result)
                    request.finish()
                return
            # One access line here too (route "forwarded to <owner>"), with the request id
            # the owner logs its own line under: the request can be followed across both.
            started = request_log.begin(request, self.hs)  # (counted in flight: a draining process waits)
            request.route_pattern = f"forwarded to {owner}"
            try:
                if await api.count_here(request):
                    await self.forward(request, owner)
            finally:
                request_log.end(request, self.hs, request.method.decode("ascii", "replace"), request.code, started)
        defer.ensureDeferred(run())
        return server.NOT_DONE_YET
