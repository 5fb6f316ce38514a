"""Discovery: /versions, .well-known and /capabilities."""
from __future__ import annotations

from client_api.http import Req, Router
from homeserver.errors import MatrixError
from homeserver.room_versions import KNOWN_ROOM_VERSIONS

SPEC_VERSIONS = ["r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6"]


async def versions(req: Req):
    # Authenticated media (v1.11's /_matrix/client/v1/media) is served: clients that look
    # for this flag use it without the server claiming all of v1.11.
    # Simplified sliding sync (MSC4186) on Synapse's unstable path: docs/sliding-sync.md.
    return {"versions": SPEC_VERSIONS, "unstable_features": {"org.matrix.msc3916.stable": True,
                                                             "org.matrix.simplified_msc3575": True}}


async def well_known(req: Req):
    return {"m.homeserver": {"base_url": req.hs.config.public_baseurl.rstrip("/")}}


async def well_known_server(req: Req):
    # Delegation for other servers (federation.well_known_server); 404 when not configured.
    delegated = req.hs.config.federation.well_known_server
    if not delegated:
        raise MatrixError(404, "M_NOT_FOUND", "no server delegation is configured")
    return {"m.server": delegated}


async def capabilities(req: Req):
    return {"capabilities": {
        "m.change_password": {"enabled": True},
        "m.room_versions": {
            "default": req.hs.config.rooms.default_room_version,
            "available": {v: "stable" for v in KNOWN_ROOM_VERSIONS},
        },
        "m.set_displayname": {"enabled": True},
        "m.set_avatar_url": {"enabled": True},
        "m.3pid_changes": {"enabled": False},
        "m.get_login_token": {"enabled": True},
    }}


def register(router: Router) -> None:
    router.add("GET", "/_matrix/client/versions", versions, auth=False)
    router.add("GET", "/.well-known/matrix/client", well_known, auth=False)
    router.add("GET", "/.well-known/matrix/server", well_known_server, auth=False)
    router.client("GET", "/capabilities", capabilities)
