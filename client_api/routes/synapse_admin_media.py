"""Synapse's admin API for media: a user's media (list, delete), the media a room's events
name (list, quarantine), quarantine by id or by user and its undoing, protection from
quarantine, query one piece of media, delete one, delete old media by date and size, and
the remote media cache purge (no federation yet: nothing is cached). Paths, parameters
and response shapes are Synapse's (docs/admin_api/media_admin_api.md). Tenant admins
reach only media uploaded by a user of their tenant (the uploader's tenant when it was
uploaded); any other media answers exactly like media that does not exist. Quarantines,
protections and deletions are audited."""
from __future__ import annotations

from functools import partial

from client_api.admin_auth import SYNAPSE_V1 as V1
from client_api.admin_auth import AdminScope, check_room_id, origin_of, require_admin, require_server_admin
from client_api.admin_auth import next_offset, offset_page, query_bool, query_choice, query_count, query_dir
from client_api.http import Req, Router
from homeserver.errors import MatrixError, not_found
from homeserver.ids import is_valid_user_id
from homeserver.media.repository import MEDIA_ID_RE
from storage import admin_rooms as admin_rooms_store
from storage import media as media_store
from storage.media import MediaRow

UNKNOWN_MEDIA = "Unknown media"
# Timestamps below this are in seconds, not milliseconds (Synapse's check: Dec 1970 in
# milliseconds, Aug 2920 in seconds).
MIN_BEFORE_TS = 30_000_000_000


def _media_json(req: Req, row: MediaRow) -> dict:
    """A local media row as Synapse's admin API shows it."""
    return {"media_id": row.media_id, "media_type": row.content_type, "media_length": row.size,
            "upload_name": row.upload_name, "created_ts": row.created_ts, "url_cache": None,
            "last_access_ts": req.hs.media.last_access_ts(row), "quarantined_by": row.quarantined_by,
            "safe_from_quarantine": row.safe_from_quarantine, "user_id": row.user_id,
            "authenticated": True, "sha256": row.sha256}


async def _media(req: Req, scope: AdminScope, server_name: str, media_id: str) -> MediaRow:
    """The local media, or 404 as for media that does not exist (remote media is not
    cached: there is no federation yet)."""
    row = None
    if server_name == req.hs.server_name and MEDIA_ID_RE.fullmatch(media_id):
        row = await req.hs.db.run(media_store.get_media, media_id)
    if row is None or not scope.covers(row.tenant_id):
        raise not_found(UNKNOWN_MEDIA)
    return row


def _audit_tenant(scope: AdminScope, tenant: object = ...) -> object:
    """A tenant admin's entries carry their tenant (never the other tenant they may have
    named); a server admin's, the tenant of what was acted on (`...`: as the audit log
    works it out from the user or room)."""
    return tenant if scope.server_admin else scope.tenant


# ---- query, list ---------------------------------------------------------------------------

async def query_media(req: Req, server_name: str, media_id: str):
    scope = await require_admin(req)
    row = await _media(req, scope, server_name, media_id)
    return {"media_info": dict(_media_json(req, row), media_origin=None, filesystem_id=None)}


def _user_media_query(req: Req) -> tuple[int, int, str, bool]:
    """(from, limit, order_by, backwards): newest first unless order_by or dir is given."""
    start, limit = offset_page(req)
    if req.query("order_by") is None and req.query("dir") is None:
        return start, limit, "created_ts", True
    return start, limit, query_choice(req, "order_by", "created_ts", media_store.MEDIA_ORDER), query_dir(req)


async def _user_media(req: Req, user_id: str) -> tuple[AdminScope, int, int, list[MediaRow], int]:
    scope = await require_admin(req)
    await scope.user(req, user_id)
    start, limit, order_by, backwards = _user_media_query(req)
    rows, total = await req.hs.db.run(media_store.user_media, user_id, start, limit, order_by, backwards,
                                      scope.tenant, not scope.server_admin)
    return scope, start, limit, rows, total


async def list_user_media(req: Req, user_id: str):
    _, start, limit, rows, total = await _user_media(req, user_id)
    result: dict = {"media": [_media_json(req, r) for r in rows], "total": total}
    after = next_offset(start, limit, len(rows), total)
    if after is not None:
        result["next_token"] = after
    return result


async def list_room_media(req: Req, room_id: str):
    scope = await require_admin(req)
    local, remote = await _room_mxcs(req, scope, room_id)
    return {"local": [req.hs.media.mxc(m) for m in local], "remote": remote}


async def _room_mxcs(req: Req, scope: AdminScope, room_id: str) -> tuple[list[str], list[str]]:
    """(local media ids, remote mxc URIs) the room's events name; none for a room that
    does not exist or that the admin does not manage (as Synapse, no 404)."""
    check_room_id(room_id)
    exists, tenant = await req.hs.db.run(admin_rooms_store.room_tenant, room_id)
    if not exists or not scope.covers(tenant):
        return [], []
    found = await req.hs.db.run(media_store.mxcs_in_room, room_id)
    local = [m for server, m in found if server == req.hs.server_name]
    remote = [f"mxc://{server}/{m}" for server, m in found if server != req.hs.server_name]
    return local, remote


# ---- quarantine, protection -------------------------------------------------------------

async def _set_quarantine(req: Req, scope: AdminScope, media_ids: list[str], quarantine: bool) -> int:
    return await req.hs.db.run(media_store.set_quarantine, media_ids, req.user_id if quarantine else None,
                               scope.tenant, not scope.server_admin)


async def _quarantine_by_id(req: Req, server_name: str, media_id: str, quarantine: bool):
    """Answers {} whether or not the media exists, as Synapse does."""
    scope = await require_admin(req)
    try:
        row = await _media(req, scope, server_name, media_id)
    except MatrixError:
        changed, tenant = 0, None
    else:
        changed, tenant = await _set_quarantine(req, scope, [row.media_id], quarantine), row.tenant_id
    await req.hs.audit.record("media.quarantine" if quarantine else "media.unquarantine", origin_of(req),
                              tenant_id=_audit_tenant(scope, tenant), media_id=media_id,
                              server_name=server_name, changed=changed)
    return {}


quarantine_media = partial(_quarantine_by_id, quarantine=True)
unquarantine_media = partial(_quarantine_by_id, quarantine=False)


async def _quarantine_all(req: Req, scope: AdminScope, media_ids: list[str], **target: str) -> dict:
    """Quarantines the media of a room or a user (`target`, as audited)."""
    count = await _set_quarantine(req, scope, media_ids, True) if media_ids else 0
    await req.hs.audit.record("media.quarantine", origin_of(req), **target,
                              tenant_id=_audit_tenant(scope), num_quarantined=count)
    return {"num_quarantined": count}


async def quarantine_room_media(req: Req, room_id: str):
    scope = await require_admin(req)
    local, _ = await _room_mxcs(req, scope, room_id)
    return await _quarantine_all(req, scope, local, target_room=room_id)


async def quarantine_user_media(req: Req, user_id: str):
    """A user that does not exist (or another tenant's) has no media: 0, as Synapse."""
    scope = await require_admin(req)
    if not is_valid_user_id(user_id) or "\x00" in user_id:
        raise MatrixError(400, "M_INVALID_PARAM", f"{user_id!r} is not a valid user id")
    ids = await req.hs.db.run(media_store.user_media_ids, user_id, scope.tenant, not scope.server_admin)
    return await _quarantine_all(req, scope, ids, target_user=user_id)


async def _protect(req: Req, media_id: str, safe: bool):
    scope = await require_admin(req)
    row = await _media(req, scope, req.hs.server_name, media_id)
    await req.hs.db.run(media_store.set_safe, row.media_id, safe, scope.tenant, not scope.server_admin)
    await req.hs.audit.record("media.protect" if safe else "media.unprotect", origin_of(req),
                              tenant_id=_audit_tenant(scope, row.tenant_id), media_id=media_id)
    return {}


protect_media = partial(_protect, safe=True)
unprotect_media = partial(_protect, safe=False)


# ---- deletion ---------------------------------------------------------------------------

async def _delete(req: Req, scope: AdminScope, media_ids: list[str], audit_tenant: object = ..., **details) -> dict:
    deleted = await req.hs.media.delete(media_ids)
    await req.hs.audit.record("media.delete", origin_of(req), tenant_id=_audit_tenant(scope, audit_tenant),
                              deleted_media=deleted, total=len(deleted), **details)
    return {"deleted_media": deleted, "total": len(deleted)}


async def delete_media(req: Req, server_name: str, media_id: str):
    scope = await require_admin(req)
    if server_name != req.hs.server_name:
        raise MatrixError(400, "M_UNKNOWN", "Can only delete local media")
    row = await _media(req, scope, server_name, media_id)
    return await _delete(req, scope, [row.media_id], row.tenant_id)


async def delete_user_media(req: Req, user_id: str):
    """Deletes the page of the user's media the list would show (100 by default)."""
    scope, _, _, rows, _ = await _user_media(req, user_id)
    return await _delete(req, scope, [r.media_id for r in rows], target_user=user_id)


def _before_ts(req: Req) -> int:
    if req.query("before_ts") is None:
        raise MatrixError(400, "M_MISSING_PARAM", "Missing integer query parameter 'before_ts'")
    before_ts = query_count(req, "before_ts", 0)
    if before_ts < MIN_BEFORE_TS:
        raise MatrixError(400, "M_INVALID_PARAM", "Query parameter before_ts you provided is from the year 1970. "
                                                  "Double check that you are providing a timestamp in milliseconds.")
    return before_ts


async def delete_old_media(req: Req, server_name: str | None = None):
    """Media last downloaded (never downloaded: uploaded) before `before_ts`, larger than
    `size_gt`; not quarantined or protected media; with `keep_profiles` (default) not
    avatars. Tenant admins delete only their tenant's media."""
    scope = await require_admin(req)
    before_ts = _before_ts(req)
    size_gt = query_count(req, "size_gt", 0)
    keep_profiles = query_bool(req, "keep_profiles", True)
    if server_name is not None and server_name != req.hs.server_name:
        raise MatrixError(400, "M_UNKNOWN", "Can only delete local media")
    await req.hs.media.flush_accesses()
    ids = await req.hs.db.run(media_store.old_media_ids, before_ts, size_gt, keep_profiles,
                              f"mxc://{req.hs.server_name}/", scope.tenant, not scope.server_admin)
    return await _delete(req, scope, ids, None, before_ts=before_ts, size_gt=size_gt, keep_profiles=keep_profiles)


async def purge_media_cache(req: Req):
    """Remote media is not fetched yet (no federation), so there is no cache to purge."""
    await require_server_admin(req)
    _before_ts(req)
    return {"deleted": 0}


def register(router: Router) -> None:
    router.add("GET", V1 + "/users/{user_id}/media", list_user_media)
    router.add("DELETE", V1 + "/users/{user_id}/media", delete_user_media)
    router.add("GET", V1 + "/room/{room_id}/media", list_room_media)
    router.add("POST", V1 + "/room/{room_id}/media/quarantine", quarantine_room_media)
    router.add("POST", V1 + "/quarantine_media/{room_id}", quarantine_room_media)  # Synapse's older path
    router.add("POST", V1 + "/user/{user_id}/media/quarantine", quarantine_user_media)
    router.add("POST", V1 + "/media/quarantine/{server_name}/{media_id}", quarantine_media)
    router.add("POST", V1 + "/media/unquarantine/{server_name}/{media_id}", unquarantine_media)
    router.add("POST", V1 + "/media/protect/{media_id}", protect_media)
    router.add("POST", V1 + "/media/unprotect/{media_id}", unprotect_media)
    router.add("POST", V1 + "/media/delete", delete_old_media)
    router.add("POST", V1 + "/media/{server_name}/delete", delete_old_media)  # Synapse's older path
    router.add("GET", V1 + "/media/{server_name}/{media_id}", query_media)
    router.add("DELETE", V1 + "/media/{server_name}/{media_id}", delete_media)
    router.add("POST", V1 + "/purge_media_cache", purge_media_cache)
