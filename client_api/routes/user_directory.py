"""User directory search."""
from __future__ import annotations

from client_api.http import Req, Router
from homeserver.errors import MatrixError
from storage import accounts as accounts_store


async def search(req: Req):
    body = req.json()
    term = body.get("search_term")
    if not isinstance(term, str):
        raise MatrixError(400, "M_BAD_JSON", "search_term must be a string")
    limit = body.get("limit", 10)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        raise MatrixError(400, "M_BAD_JSON", "limit must be a non-negative integer")
    limit = min(limit, 100)
    found = await req.hs.db.run(accounts_store.search_users, term.strip(), limit + 1, req.user_id,
                                req.hs.config.user_directory.search_all_users)
    results = [{k: v for k, v in u.items() if v is not None} for u in found[:limit]]
    return {"results": results, "limited": len(found) > limit}


def register(router: Router) -> None:
    router.client("POST", "/user_directory/search", search)
