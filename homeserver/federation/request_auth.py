"""The `X-Matrix` Authorization scheme of server-server requests: signing outbound
requests and parsing/verifying inbound ones. Pure functions; key look-ups are the
caller's (the KeyRing)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from signedjson.key import SigningKey, VerifyKey
from signedjson.sign import SignatureVerifyException, sign_json, verify_signed_json

from homeserver.signing_key import key_id as key_id_of


class BadAuthorization(ValueError):
    """The header is missing, malformed or does not verify."""


@dataclass(frozen=True)
class XMatrix:
    origin: str
    destination: str | None
    key: str
    sig: str


def signing_json(method: str, uri: str, origin: str, destination: str, content: Any = None) -> dict:
    obj: dict[str, Any] = {"method": method, "uri": uri, "origin": origin, "destination": destination}
    if content is not None:
        obj["content"] = content
    return obj


def sign_request(method: str, uri: str, origin: str, destination: str, key: SigningKey,
                 content: Any = None) -> str:
    """The Authorization header value for a request (uri = path plus query string)."""
    signed = sign_json(signing_json(method, uri, origin, destination, content), origin, key)
    sig = signed["signatures"][origin][key_id_of(key)]
    return (f'X-Matrix origin="{_quote(origin)}",destination="{_quote(destination)}",'
            f'key="{key_id_of(key)}",sig="{sig}"')


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


# auth-param: token "=" ( token / quoted-string ), comma separated.
_PARAM_RE = re.compile(r'\s*([A-Za-z0-9_\-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s"]*))\s*(?:,|$)')


def parse_x_matrix(header: str) -> XMatrix:
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "x-matrix":
        raise BadAuthorization("the Authorization scheme must be X-Matrix")
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        m = _PARAM_RE.match(rest, pos)
        if not m or m.end() == pos:
            raise BadAuthorization("malformed X-Matrix parameters")
        value = m.group(2) if m.group(2) is not None else m.group(3)
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value) if m.group(2) is not None else value
        pos = m.end()
    try:
        return XMatrix(params["origin"], params.get("destination"), params["key"], params["sig"])
    except KeyError as e:
        raise BadAuthorization(f"X-Matrix parameter {e.args[0]} is missing") from None


def verify_request(x: XMatrix, method: str, uri: str, destination: str, content: Any,
                   verify_key: VerifyKey) -> None:
    """`verify_key` must be the origin's key named `x.key` (its alg:version)."""
    signed = signing_json(method, uri, x.origin, destination, content)
    signed["signatures"] = {x.origin: {x.key: x.sig}}
    try:
        verify_signed_json(signed, x.origin, verify_key)
    except SignatureVerifyException as e:
        raise BadAuthorization(f"request signature does not verify: {e}") from None
