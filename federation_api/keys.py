"""The key server: this server's keys, and notary answers for other servers' keys;
plus /_matrix/federation/v1/version."""
from __future__ import annotations

from client_api.http import Req, Router
from homeserver.errors import MatrixError

SERVER_NAME = "erp-homeserver"
SERVER_VERSION = "0.1.0"


async def version(req: Req):
    return {"server": {"name": SERVER_NAME, "version": SERVER_VERSION}}


async def server_keys(req: Req, key_id: str | None = None):
    # The key id in the path is deprecated: every key is returned either way.
    return req.hs.federation.keyring.own_key_response()


def _min_valid(value) -> int:
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool):
        raise MatrixError(400, "M_BAD_JSON", "minimum_valid_until_ts must be an integer")
    return value


async def query_keys(req: Req):
    body = req.json()
    wanted = body.get("server_keys")
    if not isinstance(wanted, dict):
        raise MatrixError(400, "M_BAD_JSON", "server_keys must be an object")
    out: list[dict] = []
    for server_name, keys in wanted.items():
        if not isinstance(keys, dict):
            raise MatrixError(400, "M_BAD_JSON", "server_keys.<server> must be an object")
        min_valid = 0
        for criteria in keys.values():
            if not isinstance(criteria, dict):
                raise MatrixError(400, "M_BAD_JSON", "key criteria must be objects")
            min_valid = max(min_valid, _min_valid(criteria.get("minimum_valid_until_ts")))
        out += await req.hs.federation.keyring.notary_answer(server_name, list(keys), min_valid)
    return {"server_keys": out}


async def query_server(req: Req, server_name: str, key_id: str | None = None):
    try:
        min_valid = int(req.query("minimum_valid_until_ts") or 0)
    except ValueError:
        raise MatrixError(400, "M_INVALID_PARAM", "minimum_valid_until_ts must be an integer") from None
    keys = [key_id] if key_id else []
    return {"server_keys": await req.hs.federation.keyring.notary_answer(server_name, keys, min_valid)}


def register(router: Router) -> None:
    router.add("GET", "/_matrix/federation/v1/version", version, auth=False)
    router.add("GET", "/_matrix/key/v2/server", server_keys, auth=False)
    router.add("GET", "/_matrix/key/v2/server/{key_id}", server_keys, auth=False)
    router.add("POST", "/_matrix/key/v2/query", query_keys, auth=False)
    router.add("GET", "/_matrix/key/v2/query/{server_name}", query_server, auth=False)
    router.add("GET", "/_matrix/key/v2/query/{server_name}/{key_id}", query_server, auth=False)
