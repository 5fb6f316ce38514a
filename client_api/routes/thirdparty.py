"""Third-party networks (/thirdparty/*), answered by the application services that bridge
them (appservice/thirdparty.py). Results that point into another organization (a local
room alias of another tenant's room, a local user of another tenant) are left out, so
another tenant's things look exactly as if they did not exist."""
from __future__ import annotations

from client_api.http import Req, Router
from homeserver.errors import missing_param, not_found
from storage import accounts as accounts_store
from storage import directory as directory_store
from storage import tenancy as tenancy_store


def _thirdparty(req: Req):
    appservices = getattr(req.hs, "appservices", None)
    return appservices.thirdparty if appservices is not None else None


async def protocols(req: Req):
    tp = _thirdparty(req)
    return await tp.protocols() if tp is not None else {}


async def protocol(req: Req, protocol: str):
    tp = _thirdparty(req)
    found = (await tp.protocols()).get(protocol) if tp is not None and tp.knows(protocol) else None
    if found is None:
        raise not_found(f"unknown third-party protocol {protocol!r}")
    return found


def _fields(req: Req) -> dict[str, str]:
    # The look-up fields are the query parameters (the access token is ours, not theirs).
    return {k.decode("utf-8", "replace"): v[0].decode("utf-8", "replace")
            for k, v in req.args.items() if k != b"access_token" and v}


async def _answer(req: Req, kind: str, protocol: str | None, query: dict[str, str]):
    tp = _thirdparty(req)
    if protocol is not None and (tp is None or not tp.knows(protocol)):
        raise not_found(f"unknown third-party protocol {protocol!r}")
    results = await tp.lookup(kind, protocol, query) if tp is not None else []
    tenant = await req.hs.tenancy.tenant_of(req.user_id)
    visible = [r for r in results if await _within_tenant(req, kind, r, tenant)]
    if not visible:
        raise not_found(f"no third-party {kind} found")
    return visible


async def _within_tenant(req: Req, kind: str, result: dict, tenant: str | None) -> bool:
    """False when the result names an existing local room or user of another tenant."""
    if kind == "location":
        alias = await req.hs.db.run(directory_store.get_alias, result["alias"])
        return alias is None or await req.hs.db.run(tenancy_store.room_tenant, alias[0]) == tenant
    user_id = result["userid"]
    if not req.hs.accounts.is_mine(user_id) or not await req.hs.db.run(accounts_store.user_exists, user_id):
        return True
    return await req.hs.tenancy.tenant_of(user_id) == tenant


async def location_by_protocol(req: Req, protocol: str):
    return await _answer(req, "location", protocol, _fields(req))


async def user_by_protocol(req: Req, protocol: str):
    return await _answer(req, "user", protocol, _fields(req))


async def location_by_alias(req: Req):
    alias = req.query("alias")
    if not alias:
        raise missing_param("alias is required")
    return await _answer(req, "location", None, {"alias": alias})


async def user_by_id(req: Req):
    user_id = req.query("userid")
    if not user_id:
        raise missing_param("userid is required")
    return await _answer(req, "user", None, {"userid": user_id})


def register(router: Router) -> None:
    router.client("GET", "/thirdparty/protocols", protocols)
    router.client("GET", "/thirdparty/protocol/{protocol}", protocol)
    router.client("GET", "/thirdparty/location/{protocol}", location_by_protocol)
    router.client("GET", "/thirdparty/user/{protocol}", user_by_protocol)
    router.client("GET", "/thirdparty/location", location_by_alias)
    router.client("GET", "/thirdparty/user", user_by_id)
