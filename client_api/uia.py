"""User-interactive authentication (the spec's UIA): flows, sessions and stage checks.

A session is stored in the database when the server first answers 401, and lives for
SESSION_LIFETIME_MS from then. It belongs to the operation that started it (method and
path, plus whatever the handler names, such as the devices a bulk delete removes) and to
the requesting user: continuing it for another operation or as another user is refused
with 403. It remembers the stages completed so far, the request's parameters (a client
may continue with only `auth` or with some of them; passwords are never stored, only
hashes) and results such as the user a registration created, which makes completing a
session twice idempotent. Completed stages stay valid for the session's lifetime, so a
retry of the same operation (after a lost response) needs no new password."""
from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from client_api.http import Req
from homeserver.errors import MatrixError, bad_json, forbidden
from storage import uia as store

SESSION_LIFETIME_MS = 30 * 60 * 1000


@dataclass
class Session:
    session_id: str
    operation: str
    user_id: str | None               # None: registration, nobody is logged in yet
    params: dict[str, Any]
    completed: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    created_ts: int = 0
    stored: bool = False


def _now() -> int:
    return int(time.time() * 1000)


def _operation(req: Req, detail: str) -> str:
    path = re.sub(r"^/_matrix/client/(?:r0|v3)/", "/_matrix/client/v3/", req.path)
    return f"{req.method} {path}" + (f" {detail}" if detail else "")


def _auth_dict(req: Req) -> dict[str, Any] | None:
    auth = req.json(allow_empty=True).get("auth")
    if auth is not None and not isinstance(auth, dict):
        raise bad_json("auth must be an object")
    return auth


async def session(req: Req, user_id: str | None, params: dict[str, Any] | None = None,
                  detail: str = "") -> Session:
    """The session the request's `auth` continues, checked to be for this operation and
    user, or a new one. The request's `params` override those stored with the session."""
    params = params or {}
    operation = _operation(req, detail)
    auth = _auth_dict(req)
    session_id = auth.get("session") if auth else None
    if session_id is None:
        return Session(secrets.token_urlsafe(18), operation, user_id, params, created_ts=_now())
    if not isinstance(session_id, str):
        raise bad_json("auth.session must be a string")
    row = await req.hs.db.run(store.get_session, session_id, _now() - SESSION_LIFETIME_MS)
    if row is None:
        raise MatrixError(400, "M_UNKNOWN", "unknown or expired authentication session")
    if row["operation"] != operation:
        raise forbidden("this authentication session was started for another operation")
    if row["user_id"] != user_id:
        raise forbidden("this authentication session belongs to another user")
    return Session(session_id, operation, user_id, {**json.loads(row["params"]), **params},
                   list(row["completed"]), json.loads(row["data"]), row["created_ts"], True)


async def require(req: Req, sess: Session, flows: list[list[str]]) -> None:
    """Check the stage the request's `auth` completes, if any; return once one of `flows`
    is complete, else answer 401 with the flows, the session and what is completed."""
    auth = _auth_dict(req) or {}
    stage = auth.get("type")
    error: tuple[str, str] | None = None
    if stage is not None and stage not in sess.completed:
        if not any(stage in flow for flow in flows):
            error = ("M_UNRECOGNIZED", f"authentication type {stage!r} is not offered here")
        else:
            failure = await _check_stage(req, sess, stage, auth)
            if failure is None:
                sess.completed.append(stage)
            else:
                error = ("M_FORBIDDEN", failure)
    done = any(all(s in sess.completed for s in flow) for flow in flows)
    if not (done and not sess.stored):  # a new session done in one request is never continued
        await save(req, sess)
    if done:
        return
    body: dict[str, Any] = {"flows": [{"stages": f} for f in flows], "params": {},
                            "session": sess.session_id, "completed": list(sess.completed)}
    if error is not None:
        body.update(errcode=error[0], error=error[1])
    e = MatrixError(401, error[0] if error else "M_FORBIDDEN", error[1] if error else "authentication required")
    e.to_json = lambda: body  # type: ignore[method-assign]  # the spec's UIA response shape
    raise e


async def save(req: Req, sess: Session) -> None:
    params, data = json.dumps(sess.params), json.dumps(sess.data)
    if sess.stored:
        await req.hs.db.run(store.update_session, sess.session_id, params, sess.completed, data)
        return
    await req.hs.db.run(store.create_session, {
        "session_id": sess.session_id, "operation": sess.operation, "user_id": sess.user_id,
        "params": params, "completed": sess.completed, "data": data, "created_ts": sess.created_ts,
    }, _now() - SESSION_LIFETIME_MS)
    sess.stored = True


async def _check_stage(req: Req, sess: Session, stage: str, auth: dict[str, Any]) -> str | None:
    """None when the stage passes, else why not (answered as 401 M_FORBIDDEN)."""
    if stage == "m.login.dummy":
        return None
    if stage == "m.login.password":
        return await _check_password(req, sess.user_id, auth)
    return f"authentication type {stage!r} is not supported"


async def _check_password(req: Req, user_id: str | None, auth: dict[str, Any]) -> str | None:
    identifier = auth.get("identifier")
    if isinstance(identifier, dict):
        if identifier.get("type", "m.id.user") != "m.id.user":
            return "only m.id.user identifiers are supported"
        claimed = identifier.get("user")
    else:
        claimed = auth.get("user")  # the deprecated top-level form
    claimed = claimed if claimed is not None else user_id
    # Checked before the password, so this is no oracle for other users' passwords.
    if user_id is None or not isinstance(claimed, str) or req.hs.accounts.user_id_for(claimed) != user_id:
        raise forbidden("you may only authenticate as yourself")
    password = auth.get("password")
    if not isinstance(password, str) or not await req.hs.accounts.check_password(user_id, password):
        return "invalid password"
    return None


async def require_password(req: Req, user_id: str, detail: str = "") -> None:
    """Sensitive operations (delete devices, change password, deactivate, replace
    cross-signing keys, get a login token) re-check the user's password."""
    await require(req, await session(req, user_id, detail=detail), [["m.login.password"]])
