"""Profiles: displayname and avatar_url, propagated to the user's member events."""
from __future__ import annotations

from client_api.http import Req, Router
from homeserver.errors import MatrixError, forbidden, not_found

_FIELDS = ("displayname", "avatar_url")


async def _profile_or_404(req: Req, user_id: str) -> dict:
    if not req.hs.accounts.is_mine(user_id) and req.hs.federation is not None:
        # Another server's user: ask their server (users of tenants closed to federation
        # see no one outside).
        federation = req.hs.federation
        remote = await federation.queries.profile(user_id) \
            if federation.exposure.tenant_open(await req.hs.tenancy.tenant_of(req.user_id)) else None
        if remote is None:
            raise not_found("profile not found")
        return remote
    profile = await req.hs.profiles.get(user_id)
    appservices = getattr(req.hs, "appservices", None)
    if profile is None and appservices is not None and await appservices.queries.query_user(user_id):
        profile = await req.hs.profiles.get(user_id)
    # Another organization's users look exactly like users that do not exist.
    if profile is None or not await req.hs.tenancy.same_tenant(req.user_id, user_id):
        raise not_found("profile not found")
    return profile


async def get_profile(req: Req, user_id: str):
    return await _profile_or_404(req, user_id)


async def get_field(req: Req, user_id: str, field: str):
    if field not in _FIELDS:
        raise not_found(f"unknown profile field {field}")
    profile = await _profile_or_404(req, user_id)
    if field not in profile:
        raise not_found(f"{field} is not set")
    return {field: profile[field]}


async def set_field(req: Req, user_id: str, field: str):
    if field not in _FIELDS:
        raise MatrixError(400, "M_UNRECOGNIZED", f"unknown profile field {field}")
    if user_id != req.user_id and not req.requester.is_admin:
        raise forbidden("you may only change your own profile")
    body = req.json()
    value = body.get(field)
    if value is not None and not isinstance(value, str):
        raise MatrixError(400, "M_BAD_JSON", f"{field} must be a string")
    if value is not None and len(value) > 256 and field == "displayname":
        raise MatrixError(400, "M_TOO_LARGE", "displayname is longer than 256 characters")
    await req.hs.profiles.set_field(user_id, field, value or None)
    return {}


def register(router: Router) -> None:
    # Profiles need a token: look-ups are scoped to the asker's organization.
    router.client("GET", "/profile/{user_id}", get_profile)
    router.client("GET", "/profile/{user_id}/{field}", get_field)
    router.client("PUT", "/profile/{user_id}/{field}", set_field)
