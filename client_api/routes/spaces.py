"""The space hierarchy: GET /_matrix/client/v1/rooms/{roomId}/hierarchy."""
from __future__ import annotations

from client_api.http import Req, Router
from homeserver.errors import MatrixError
from homeserver.space_hierarchy import DEFAULT_LIMIT, MAX_LIMIT, HierarchyQuery, hierarchy


def _query(req: Req) -> HierarchyQuery:
    # "True" too: matrix-nio sends Python's spelling.
    suggested = (req.query("suggested_only") or "false").lower()
    if suggested not in ("true", "false"):
        raise MatrixError(400, "M_INVALID_PARAM", "suggested_only must be true or false")
    limit = req.query_int("limit", DEFAULT_LIMIT)
    if limit is None or limit <= 0:
        raise MatrixError(400, "M_INVALID_PARAM", "limit must be an integer greater than zero")
    max_depth = req.query_int("max_depth")
    if max_depth is not None and max_depth < 0:
        raise MatrixError(400, "M_INVALID_PARAM", "max_depth must be a non-negative integer")
    query = HierarchyQuery(suggested == "true", max_depth, min(limit, MAX_LIMIT))
    token = req.query("from")
    return query.continue_from(token) if token is not None else query


async def get_hierarchy(req: Req, room_id: str):
    return await hierarchy(req.hs, req.user_id, room_id, _query(req))


def register(router: Router) -> None:
    router.add("GET", "/_matrix/client/v1/rooms/{room_id}/hierarchy", get_hierarchy)
