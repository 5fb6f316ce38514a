"""Server ACLs (`m.room.server_acl`): which servers may take part in a room. Pure."""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from homeserver.federation.discovery import split_server_name
from homeserver.federation.tls import is_ip_literal


@lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern),
                      re.IGNORECASE | re.DOTALL)


def _matches(host: str, patterns: Any) -> bool:
    if not isinstance(patterns, list):
        return False
    return any(isinstance(p, str) and _glob(p).fullmatch(host) for p in patterns)


def server_allowed(server_name: str, acl: dict[str, Any] | None) -> bool:
    """The spec's order: IP literals (if not allowed), then deny, then allow. No ACL
    allows everyone; an ACL without `allow` allows no one."""
    if acl is None:
        return True
    try:
        host = split_server_name(server_name)[0]  # ACLs name hosts, without the port
    except ValueError:
        return False
    if acl.get("allow_ip_literals", True) is False and is_ip_literal(host):
        return False
    if _matches(host, acl.get("deny", [])):
        return False
    return _matches(host, acl.get("allow", []))
