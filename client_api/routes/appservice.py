"""Client-server extensions for application services: ping."""
from __future__ import annotations

from client_api.http import Req, Router
from homeserver.errors import MatrixError, forbidden


async def ping(req: Req, appservice_id: str):
    reg = req.requester.app_service
    if reg is None or reg.id != appservice_id:
        raise forbidden("only the application service itself may ping")
    body = req.json(allow_empty=True)
    txn = body.get("transaction_id")
    if txn is not None and not isinstance(txn, str):
        raise MatrixError(400, "M_BAD_JSON", "transaction_id must be a string")
    status, result = await req.hs.appservices.queries.ping(reg, txn)
    return status, result


def register(router: Router) -> None:
    router.add("POST", "/_matrix/client/v1/appservice/{appservice_id}/ping", ping)
