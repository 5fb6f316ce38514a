"""Server-side room key backups (/room_keys): versions and the session keys stored in
them. Keys may only be written to the current (newest live) version."""
from __future__ import annotations

import json
from typing import Any

from client_api.http import Req, Router
from homeserver.errors import MatrixError, bad_json, invalid_param, missing_param, not_found
from storage import key_backup as store

_MAX_VERSION = 2**63 - 1
# The spec defines one backup algorithm; keys stored under another could not be read back
# by any client that follows it.
BACKUP_ALGORITHMS = ("m.megolm_backup.v1.curve25519-aes-sha2",)


def _unknown_version() -> MatrixError:
    return not_found("Unknown backup version")


def _parse_version(value: str | None) -> int | None:
    """A stored version number, or None for anything that cannot name one."""
    if value is None or not value.isascii() or not value.isdigit():
        return None
    number = int(value)
    return number if 0 < number <= _MAX_VERSION else None


def _query_version(req: Req) -> str:
    value = req.query("version")
    if value is None:
        raise missing_param("the version parameter is required")
    return value


def _version_info(info: dict) -> dict:
    return {"algorithm": info["algorithm"], "auth_data": info["auth_data"], "count": info["count"],
            "etag": str(info["etag"]), "version": str(info["version"])}


def _backup_params(body: dict) -> tuple[str, dict]:
    algorithm, auth_data = body.get("algorithm"), body.get("auth_data")
    if algorithm is None or auth_data is None:
        raise missing_param("algorithm and auth_data are required")
    if not isinstance(algorithm, str):
        raise bad_json("algorithm must be a string")
    if algorithm not in BACKUP_ALGORITHMS:
        raise invalid_param(f"unsupported backup algorithm; supported: {', '.join(BACKUP_ALGORITHMS)}")
    if not isinstance(auth_data, dict):
        raise bad_json("auth_data must be an object")
    return algorithm, auth_data


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_key_data(data: Any) -> dict:
    if not isinstance(data, dict):
        raise bad_json("key data must be an object")
    if not _is_int(data.get("first_message_index")) or not _is_int(data.get("forwarded_count")):
        raise bad_json("first_message_index and forwarded_count must be integers")
    if not isinstance(data.get("is_verified"), bool):
        raise bad_json("is_verified must be a boolean")
    if not isinstance(data.get("session_data"), dict):
        raise bad_json("session_data must be an object")
    return data


def _sessions(value: Any, room_id: str) -> list[tuple[str, str, dict]]:
    if not isinstance(value, dict) or not isinstance(value.get("sessions"), dict):
        raise bad_json("room key backup data must hold a sessions object")
    return [(room_id, session_id, _check_key_data(data))
            for session_id, data in value["sessions"].items()]


def should_replace(new: dict, old: dict) -> bool:
    """The spec's rule for a session already backed up: prefer a verified key, then the one
    that decrypts from an earlier message, then the one forwarded fewer times; on a tie
    keep the stored key."""
    if new["is_verified"] != old.get("is_verified"):
        return bool(new["is_verified"])
    old_index = old.get("first_message_index")
    if new["first_message_index"] != old_index:
        return not _is_int(old_index) or new["first_message_index"] < old_index
    old_count = old.get("forwarded_count")
    return not _is_int(old_count) or new["forwarded_count"] < old_count


# ---- versions ----------------------------------------------------------------------------

async def create_version(req: Req):
    algorithm, auth_data = _backup_params(req.json())
    version = await req.hs.db.run(store.create_version, req.user_id, algorithm, json.dumps(auth_data))
    return {"version": str(version)}


async def get_current_version(req: Req):
    info = await req.hs.db.run(store.get_version, req.user_id, None)
    if info is None:
        raise not_found("No current backup version")
    return _version_info(info)


async def get_version(req: Req, version: str):
    number = _parse_version(version)
    info = await req.hs.db.run(store.get_version, req.user_id, number) if number else None
    if info is None:
        raise _unknown_version()
    return _version_info(info)


async def update_version(req: Req, version: str):
    body = req.json()
    algorithm, auth_data = _backup_params(body)
    if "version" in body and body["version"] != version:
        raise invalid_param("the version in the body does not match the version in the path")
    number = _parse_version(version)
    if number is None:
        raise _unknown_version()

    def txn(cur):
        info = store.get_version(cur, req.user_id, number)
        if info is None:
            return "missing"
        if info["algorithm"] != algorithm:
            return "algorithm"
        store.update_auth_data(cur, req.user_id, number, json.dumps(auth_data))
        return "ok"

    outcome = await req.hs.db.run(txn)
    if outcome == "missing":
        raise _unknown_version()
    if outcome == "algorithm":
        raise invalid_param("Algorithm does not match")
    return {}


async def delete_version(req: Req, version: str):
    number = _parse_version(version)
    outcome = await req.hs.db.run(store.delete_version, req.user_id, number) if number else "missing"
    if outcome == "missing":
        raise _unknown_version()
    return {}


# ---- keys --------------------------------------------------------------------------------

async def _put(req: Req, keys: list[tuple[str, str, dict]]):
    version = _query_version(req)

    def txn(cur):
        current = store.lock_current(cur, req.user_id)
        if current is None:
            return "missing", current, None
        if str(current) != version:
            return "wrong", current, None
        return "ok", current, store.put_keys(cur, req.user_id, current, keys, should_replace)

    outcome, current, result = await req.hs.db.run(txn)
    if outcome == "missing":
        raise _unknown_version()
    if outcome == "wrong":
        raise MatrixError(403, "M_WRONG_ROOM_KEYS_VERSION", "Wrong backup version.",
                          current_version=str(current))
    etag, count = result
    return {"etag": str(etag), "count": count}


async def put_all_keys(req: Req):
    rooms = req.json().get("rooms")
    if not isinstance(rooms, dict):
        raise bad_json("rooms must be an object")
    keys = [k for room_id, value in rooms.items() for k in _sessions(value, room_id)]
    return await _put(req, keys)


async def put_room_keys(req: Req, room_id: str):
    return await _put(req, _sessions(req.json(), room_id))


async def put_session_key(req: Req, room_id: str, session_id: str):
    return await _put(req, [(room_id, session_id, _check_key_data(req.json()))])


async def _get(req: Req, room_id: str | None = None, session_id: str | None = None):
    number = _parse_version(_query_version(req))
    rows = await req.hs.db.run(store.get_keys, req.user_id, number, room_id, session_id) \
        if number else None
    if rows is None:
        raise _unknown_version()
    return rows


async def get_all_keys(req: Req):
    rooms: dict[str, Any] = {}
    for room_id, session_id, data in await _get(req):
        rooms.setdefault(room_id, {"sessions": {}})["sessions"][session_id] = data
    return {"rooms": rooms}


async def get_room_keys(req: Req, room_id: str):
    return {"sessions": {s: data for _, s, data in await _get(req, room_id)}}


async def get_session_key(req: Req, room_id: str, session_id: str):
    rows = await _get(req, room_id, session_id)
    if not rows:
        raise not_found("Key not found.")
    return rows[0][2]


async def _delete(req: Req, room_id: str | None = None, session_id: str | None = None):
    number = _parse_version(_query_version(req))
    result = await req.hs.db.run(store.delete_keys, req.user_id, number, room_id, session_id) \
        if number else None
    if result is None:
        raise _unknown_version()
    etag, count = result
    return {"etag": str(etag), "count": count}


async def delete_all_keys(req: Req):
    return await _delete(req)


async def delete_room_keys(req: Req, room_id: str):
    return await _delete(req, room_id)


async def delete_session_key(req: Req, room_id: str, session_id: str):
    return await _delete(req, room_id, session_id)


def register(router: Router) -> None:
    router.client("POST", "/room_keys/version", create_version)
    router.client("GET", "/room_keys/version", get_current_version)
    router.client("GET", "/room_keys/version/{version}", get_version)
    router.client("PUT", "/room_keys/version/{version}", update_version)
    router.client("DELETE", "/room_keys/version/{version}", delete_version)
    router.client("PUT", "/room_keys/keys", put_all_keys)
    router.client("GET", "/room_keys/keys", get_all_keys)
    router.client("DELETE", "/room_keys/keys", delete_all_keys)
    router.client("PUT", "/room_keys/keys/{room_id}", put_room_keys)
    router.client("GET", "/room_keys/keys/{room_id}", get_room_keys)
    router.client("DELETE", "/room_keys/keys/{room_id}", delete_room_keys)
    router.client("PUT", "/room_keys/keys/{room_id}/{session_id}", put_session_key)
    router.client("GET", "/room_keys/keys/{room_id}/{session_id}", get_session_key)
    router.client("DELETE", "/room_keys/keys/{room_id}/{session_id}", delete_session_key)
