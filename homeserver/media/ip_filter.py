"""Which IP addresses the server may connect to on a user's behalf (URL previews).

Only globally routable unicast addresses, unless an operator whitelists a range. Private,
loopback, link-local, shared (CGNAT), multicast, documentation and other reserved ranges
are refused; IPv6 addresses that embed an IPv4 one (mapped, NAT64, 6to4) are judged by
the IPv4 address inside, so they cannot be used to reach a refused IPv4 address."""
from __future__ import annotations

import ipaddress
from typing import Union

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")


def parse(ip: str) -> Address | None:
    try:
        return ipaddress.ip_address(ip.split("%", 1)[0])  # drop an IPv6 zone index
    except ValueError:
        return None


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr in _NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    if addr.sixtofour is not None:
        return addr.sixtofour
    return None


def is_public(addr: Address) -> bool:
    if isinstance(addr, ipaddress.IPv6Address):
        inner = _embedded_ipv4(addr)
        if inner is not None:
            return is_public(inner)
        if addr in _NAT64_LOCAL or addr.teredo is not None:
            return False
    return addr.is_global and not addr.is_multicast


class IpFilter:
    def __init__(self, whitelist: list[str]) -> None:
        self.whitelist: list[Network] = [ipaddress.ip_network(c, strict=False) for c in whitelist]

    def allows(self, ip: str) -> bool:
        addr = parse(ip)
        if addr is None:
            return False
        if any(addr.version == net.version and addr in net for net in self.whitelist):
            return True
        return is_public(addr)
