"""Outbound HTTPS for federation: connections go only to addresses the IP filter allows
(public ones, plus `federation.ip_range_whitelist`), over TLS verified by `ClientTls`.
Two agents share that: one that routes `matrix-federation://<server name>/...` through
server discovery, and a plain one for `https://` (the .well-known look-ups)."""
from __future__ import annotations

import logging
import socket
from typing import Any, Callable

import orjson
from twisted.internet import defer, reactor, threads
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.names import client as dns_client
from twisted.names import dns
from twisted.web.client import Agent, HTTPConnectionPool, IAgentEndpointFactory
from twisted.web.http_headers import Headers
from zope.interface import implementer

from homeserver.federation.discovery import ServerResolver, parse_cache_control, split_server_name
from homeserver.federation.tls import ClientTls
from homeserver.media.ip_filter import IpFilter

logger = logging.getLogger(__name__)
CONNECT_TIMEOUT_S = 10
MAX_RESPONSE_BYTES = 64 * 1024 * 1024


class ConnectError(Exception):
    """No allowed address of the destination accepted a connection."""


async def resolve_ips(host: str) -> list[str]:
    if host.startswith("["):
        host = host[1:-1]
    infos = await threads.deferToThread(socket.getaddrinfo, host, None, 0, socket.SOCK_STREAM)
    seen: list[str] = []
    for family, _, _, _, addr in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and addr[0] not in seen:
            seen.append(addr[0])
    return seen


async def connect_tls(protocol_factory, host: str, port: int, creator, ip_filter: IpFilter):
    """Connect to the first address of `host` that the filter allows."""
    last: Exception | None = None
    for ip in await resolve_ips(host):
        if not ip_filter.allows(ip):
            last = ConnectError(f"{host} resolves to {ip}, which federation may not reach")
            continue
        endpoint_cls = TCP6ClientEndpoint if ":" in ip else TCP4ClientEndpoint
        endpoint = wrapClientTLS(creator, endpoint_cls(reactor, ip, port, timeout=CONNECT_TIMEOUT_S))
        try:
            return await endpoint.connect(protocol_factory)
        except Exception as e:
            last = e
    raise last or ConnectError(f"{host} has no address")


@implementer(IStreamClientEndpoint)
class _LazyEndpoint:
    def __init__(self, connect: Callable[[Any], Any]) -> None:
        self._connect = connect

    def connect(self, protocol_factory):
        return defer.ensureDeferred(self._connect(protocol_factory))


@implementer(IAgentEndpointFactory)
class _FederationEndpoints:
    """matrix-federation://<server name>: discovery picks host, port and TLS name."""

    def __init__(self, resolver: ServerResolver, tls: ClientTls, ip_filter: IpFilter) -> None:
        self._resolver, self._tls, self._filter = resolver, tls, ip_filter

    def endpointForURI(self, uri):
        server_name = uri.netloc.decode("ascii")

        async def connect(factory):
            last: Exception | None = None
            for route in await self._resolver.resolve(server_name):
                try:
                    return await connect_tls(factory, route.host, route.port,
                                             self._tls.creator(route.tls_name, server_name), self._filter)
                except Exception as e:
                    last = e
            raise last or ConnectError(f"no route to {server_name}")
        return _LazyEndpoint(connect)


@implementer(IAgentEndpointFactory)
class _HttpsEndpoints:
    def __init__(self, tls: ClientTls, ip_filter: IpFilter) -> None:
        self._tls, self._filter = tls, ip_filter

    def endpointForURI(self, uri):
        host, port = uri.host.decode("ascii"), uri.port
        return _LazyEndpoint(lambda factory: connect_tls(factory, host, port, self._tls.creator(host),
                                                         self._filter))


async def read_body(response, limit: int = MAX_RESPONSE_BYTES) -> bytes:
    import treq
    chunks: list[bytes] = []
    size = 0

    def collect(data: bytes) -> None:
        nonlocal size
        size += len(data)
        if size > limit:
            raise ValueError("response too large")
        chunks.append(data)
    await treq.collect(response, collect)
    return b"".join(chunks)


class Agents:
    """The two agents, the resolver and the DNS look-ups, built from the config."""

    def __init__(self, config) -> None:
        fed = config.federation
        self.tls = ClientTls(config)
        self.ip_filter = IpFilter(fed.ip_range_whitelist)
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 5
        self.pool.retryAutomatically = False
        self.https = Agent.usingEndpointFactory(reactor, _HttpsEndpoints(self.tls, self.ip_filter),
                                                pool=HTTPConnectionPool(reactor, persistent=False))
        self.resolver = ServerResolver(self._fetch_well_known, _lookup_srv)
        self.federation = Agent.usingEndpointFactory(
            reactor, _FederationEndpoints(self.resolver, self.tls, self.ip_filter), pool=self.pool)

    async def _fetch_well_known(self, host: str) -> tuple[str | None, float]:
        url = f"https://{host}/.well-known/matrix/server"
        for _ in range(5):  # follow a few redirects
            d = self.https.request(b"GET", url.encode(), Headers({b"User-Agent": [b"erp-homeserver"]}))
            response = await d.addTimeout(30, reactor)
            if response.code in (301, 302, 303, 307, 308):
                location = response.headers.getRawHeaders(b"location")
                await read_body(response, 65536)
                if not location:
                    break
                url = location[0].decode("ascii")
                if not url.startswith("https://"):
                    break
                continue
            body = await read_body(response, 65536)
            ttl = parse_cache_control((response.headers.getRawHeaders(b"cache-control") or [None])[0]
                                      and response.headers.getRawHeaders(b"cache-control")[0].decode())
            if response.code != 200:
                raise ValueError(f"HTTP {response.code}")
            value = orjson.loads(body).get("m.server")
            if not isinstance(value, str):
                raise ValueError("no m.server")
            return value, ttl
        raise ValueError("too many redirects")


async def _lookup_srv(name: str) -> list[tuple[str, int]]:
    answers, _, _ = await dns_client.lookupService(name)
    records = [a.payload for a in answers if a.type == dns.SRV]
    records.sort(key=lambda r: (r.priority, -r.weight))
    return [(str(r.target).rstrip("."), r.port) for r in records if str(r.target) not in ("", ".")]


def host_header(server_name: str) -> bytes:
    host, port = split_server_name(server_name)
    return server_name.encode("ascii") if port is None or ":" not in host else f"[{host}]:{port}".encode()
