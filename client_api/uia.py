"""User-interactive authentication: flows, sessions and stage checks."""
from __future__ import annotations

import secrets
import time
from typing import Any

from client_api.http import Req
from homeserver.errors import MatrixError

_SESSION_TTL_S = 600
_sessions: dict[str, float] = {}


def _new_session() -> str:
    now = time.monotonic()
    for sid, created in list(_sessions.items()):
        if now - created > _SESSION_TTL_S:
            del _sessions[sid]
    sid = secrets.token_urlsafe(16)
    _sessions[sid] = now
    return sid


def challenge(flows: list[list[str]], error: str | None = None, errcode: str | None = None) -> MatrixError:
    body: dict[str, Any] = {"flows": [{"stages": f} for f in flows], "params": {},
                            "session": _new_session()}
    e = MatrixError(401, errcode or "M_FORBIDDEN", error or "additional authentication required")
    e.extra = body
    if error is None:
        # A first challenge carries no errcode/error, as the spec shows.
        e.to_json = lambda: body  # type: ignore[method-assign]
    return e


async def require_dummy(req: Req) -> None:
    """Registration's flow: one m.login.dummy stage, completed in the same request when
    the client sends it up front."""
    auth = req.json(allow_empty=True).get("auth")
    if isinstance(auth, dict) and auth.get("type") == "m.login.dummy":
        return
    raise challenge([["m.login.dummy"]])


async def require_password(req: Req, user_id: str) -> None:
    """Sensitive operations (delete device, change password, deactivate) re-check the password."""
    auth = req.json(allow_empty=True).get("auth")
    if not isinstance(auth, dict) or auth.get("type") != "m.login.password":
        raise challenge([["m.login.password"]])
    identifier = auth.get("identifier") or {}
    claimed = identifier.get("user") if isinstance(identifier, dict) else None
    claimed = claimed or auth.get("user") or user_id
    if not isinstance(claimed, str) or req.hs.accounts.user_id_for(claimed) != user_id:
        raise challenge([["m.login.password"]], "you may only authenticate as yourself", "M_FORBIDDEN")
    password = auth.get("password")
    if not isinstance(password, str) or not await req.hs.accounts.check_password(user_id, password):
        raise challenge([["m.login.password"]], "invalid password", "M_FORBIDDEN")
