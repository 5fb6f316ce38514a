"""Server discovery (the spec's "Resolving server names"): where to connect for a
server name, and which name its certificate must carry.

1. An IP literal: that address, the given port or 8448.
2. A hostname with an explicit port: that host and port (no .well-known, no SRV).
3. `https://<hostname>/.well-known/matrix/server` names a delegated server, resolved
   like 1/2, else by SRV `_matrix-fed._tcp` then `_matrix._tcp`, else port 8448.
4. Without .well-known: SRV `_matrix-fed._tcp.<hostname>`, then `_matrix._tcp`, then
   <hostname>:8448.
The certificate is checked against the hostname (the delegated one after .well-known);
the Host header is always the server name. Answers are cached (well-known by its
Cache-Control, 24 h at most; failures for 10 minutes)."""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Awaitable, Callable

from homeserver.federation.tls import is_ip_literal

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8448
WELL_KNOWN_MAX_CACHE_S = 24 * 3600
WELL_KNOWN_DEFAULT_CACHE_S = 24 * 3600
WELL_KNOWN_FAILURE_CACHE_S = 600
SRV_CACHE_S = 3600


@dataclass(frozen=True)
class Route:
    host: str       # what to connect to: a DNS name or an IP address
    port: int
    tls_name: str   # the name the peer's certificate must be valid for


def split_server_name(name: str) -> tuple[str, int | None]:
    """('host', port or None); IPv6 literals keep their brackets off."""
    if name.startswith("["):
        end = name.index("]")
        rest = name[end + 1:]
        return name[1:end], int(rest[1:]) if rest.startswith(":") else None
    if name.count(":") == 1:
        host, port = name.split(":")
        return host, int(port)
    return name, None


# Injected look-ups: well-known (hostname -> (m.server value or None, cache seconds)) and
# SRV (service name -> [(target, port)] in priority order).
WellKnownFetcher = Callable[[str], Awaitable[tuple[str | None, float]]]
SrvLookup = Callable[[str], Awaitable[list[tuple[str, int]]]]


class ServerResolver:
    def __init__(self, fetch_well_known: WellKnownFetcher, lookup_srv: SrvLookup,
                 clock: Callable[[], float] = time.time) -> None:
        self._well_known = fetch_well_known
        self._srv = lookup_srv
        self._clock = clock
        self._wk_cache: dict[str, tuple[float, str | None]] = {}
        self._srv_cache: dict[str, tuple[float, list[tuple[str, int]]]] = {}

    async def resolve(self, server_name: str) -> list[Route]:
        host, port = split_server_name(server_name)
        if is_ip_literal(host) or port is not None:
            return [Route(host, port or DEFAULT_PORT, host)]
        delegated = await self._delegation(host)
        if delegated is not None:
            d_host, d_port = split_server_name(delegated)
            if is_ip_literal(d_host) or d_port is not None:
                return [Route(d_host, d_port or DEFAULT_PORT, d_host)]
            return await self._by_srv(d_host)
        return await self._by_srv(host)

    async def _by_srv(self, host: str) -> list[Route]:
        for service in ("_matrix-fed._tcp.", "_matrix._tcp."):
            targets = await self._srv_cached(service + host)
            if targets:
                return [Route(target, port, host) for target, port in targets]
        return [Route(host, DEFAULT_PORT, host)]

    async def _srv_cached(self, name: str) -> list[tuple[str, int]]:
        now = self._clock()
        hit = self._srv_cache.get(name)
        if hit and hit[0] > now:
            return hit[1]
        try:
            targets = await self._srv(name)
        except Exception as e:  # no record, NXDOMAIN, timeouts: fall through to the next step
            logger.debug("SRV %s: %s", name, e)
            targets = []
        self._srv_cache[name] = (now + SRV_CACHE_S, targets)
        return targets

    async def _delegation(self, host: str) -> str | None:
        now = self._clock()
        hit = self._wk_cache.get(host)
        if hit and hit[0] > now:
            return hit[1]
        try:
            value, ttl = await self._well_known(host)
            ttl = min(max(ttl, 60), WELL_KNOWN_MAX_CACHE_S)
        except Exception as e:
            logger.debug(".well-known of %s: %s", host, e)
            value, ttl = None, WELL_KNOWN_FAILURE_CACHE_S
        if value is not None and not _valid_delegation(value):
            logger.info(".well-known of %s names an invalid server %r", host, value)
            value = None
        self._wk_cache[host] = (now + ttl, value)
        return value


_HOSTNAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.\-]{0,253})")


def _valid_delegation(value: str) -> bool:
    """A server name: hostname or IP literal (IPv6 in brackets), optional port."""
    try:
        host, port = split_server_name(value)
    except ValueError:
        return False
    if port is not None and not 0 < port < 65536:
        return False
    if value.startswith("["):
        return is_ip_literal(host)
    return bool(_HOSTNAME_RE.fullmatch(host))


def parse_cache_control(header: str | None) -> float:
    """Seconds a .well-known answer may be cached."""
    if not header:
        return WELL_KNOWN_DEFAULT_CACHE_S
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name.lower() in ("no-store", "no-cache"):
            return 60
        if name.lower() == "max-age":
            try:
                return float(int(value))
            except ValueError:
                pass
    return WELL_KNOWN_DEFAULT_CACHE_S
