"""Client-server extensions for application services: ping, and publishing rooms in the
directories of their networks."""
from __future__ import annotations

from client_api.http import Req, Router
from homeserver.errors import MatrixError, forbidden, not_found
from storage import directory as directory_store


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


async def set_network_visibility(req: Req, network_id: str, room_id: str):
    """Publish (or withdraw) a room in the directory of one of the service's networks;
    publicRooms shows it for `third_party_instance_id` "<service id>|<network id>"."""
    reg = req.requester.app_service
    if reg is None:
        raise forbidden("only application services may edit their networks' room directories")
    visibility = req.json().get("visibility")
    if visibility not in ("public", "private"):
        raise MatrixError(400, "M_INVALID_PARAM", "visibility must be public or private")
    if await req.hs.room_heads.get(room_id) is None:
        raise not_found("unknown room")
    await req.hs.db.run(directory_store.set_appservice_room_list, reg.id, network_id, room_id,
                        visibility == "public")
    return {}


def register(router: Router) -> None:
    router.client("PUT", "/directory/list/appservice/{network_id}/{room_id}", set_network_visibility)
    router.add("POST", "/_matrix/client/v1/appservice/{appservice_id}/ping", ping)
