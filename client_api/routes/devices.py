"""Device management: list, get, rename, delete (behind password re-authentication)."""
from __future__ import annotations

from client_api import uia
from client_api.http import Req, Router
from homeserver.errors import MatrixError, not_found
from storage import accounts as accounts_store


async def list_devices(req: Req):
    devices = await req.hs.db.run(accounts_store.list_devices, req.user_id)
    return {"devices": [_public(d) for d in devices]}


def _public(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


async def get_device(req: Req, device_id: str):
    for d in await req.hs.db.run(accounts_store.list_devices, req.user_id):
        if d["device_id"] == device_id:
            return _public(d)
    raise not_found("no such device")


async def rename_device(req: Req, device_id: str):
    body = req.json(allow_empty=True)
    name = body.get("display_name")
    if name is not None and not isinstance(name, str):
        raise MatrixError(400, "M_BAD_JSON", "display_name must be a string")
    if name is None:
        await get_device(req, device_id)
        return {}
    if not await req.hs.accounts.rename_device(req.user_id, device_id, name):
        raise not_found("no such device")
    return {}


async def delete_device(req: Req, device_id: str):
    await uia.require_password(req, req.user_id)
    await req.hs.accounts.delete_devices(req.user_id, [device_id])
    return {}


async def delete_devices(req: Req):
    body = req.json()
    ids = body.get("devices")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise MatrixError(400, "M_BAD_JSON", "devices must be a list of device ids")
    # The session is bound to these devices: it cannot be reused to delete others.
    await uia.require_password(req, req.user_id, detail=" ".join(sorted(set(ids))))
    await req.hs.accounts.delete_devices(req.user_id, ids)
    return {}


def register(router: Router) -> None:
    router.client("GET", "/devices", list_devices)
    router.client("GET", "/devices/{device_id}", get_device)
    router.client("PUT", "/devices/{device_id}", rename_device)
    router.client("DELETE", "/devices/{device_id}", delete_device)
    router.client("POST", "/delete_devices", delete_devices)
