"""End-to-end encryption keys: upload, query, claim, changes, cross-signing keys and
signatures. Other servers' users are asked over federation (when it is enabled; else they
are reported under `failures`)."""
from __future__ import annotations

import json
from typing import Any

from signedjson.key import decode_verify_key_bytes
from signedjson.sign import verify_signed_json
from unpaddedbase64 import decode_base64

from client_api import uia
from client_api.http import Req, Router
from homeserver.errors import MatrixError, bad_json, forbidden, invalid_param, missing_param
from homeserver.ids import split_id
from storage import e2e_keys as store
from sync.tokens import StreamToken

CROSS_SIGNING_TYPES = {"master_key": "master", "self_signing_key": "self_signing",
                       "user_signing_key": "user_signing"}


def _dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


async def _record_changes(req: Req, user_ids) -> None:
    """Tell the device-list stream these users' keys changed (wakes those sharing a room)."""
    sync = req.hs.sync
    if sync is None:
        return
    for user_id in sorted(set(user_ids)):
        await sync.device_lists.record_change(user_id)


def _server_of(user_id: str) -> str:
    parts = split_id(user_id, "@")
    return parts[1] if parts else user_id


def _unreachable(failures: dict, user_id: str) -> None:
    failures[_server_of(user_id)] = {"status": 503, "message": "federation is not supported"}


def _split_key_id(full_id: Any, what: str) -> tuple[str, str]:
    if not isinstance(full_id, str) or ":" not in full_id:
        raise invalid_param(f"{what} key ids must look like <algorithm>:<key_id>")
    algorithm, key_id = full_id.split(":", 1)
    if not algorithm or not key_id:
        raise invalid_param(f"{what} key ids must look like <algorithm>:<key_id>")
    return algorithm, key_id


def _is_str_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def _is_signatures(value: Any) -> bool:
    return isinstance(value, dict) and all(_is_str_map(v) for v in value.values())


def _check_device_keys(obj: Any, user_id: str, device_id: str) -> None:
    """The spec's DeviceKeys object, for the requesting user and device."""
    if not isinstance(obj, dict):
        raise bad_json("device_keys must be an object")
    for name in ("user_id", "device_id", "algorithms", "keys", "signatures"):
        if name not in obj:
            raise bad_json(f"device_keys.{name} is required")
    if not isinstance(obj["user_id"], str) or not isinstance(obj["device_id"], str):
        raise bad_json("device_keys.user_id and device_keys.device_id must be strings")
    if not isinstance(obj["algorithms"], list) or not all(isinstance(a, str) for a in obj["algorithms"]):
        raise bad_json("device_keys.algorithms must be a list of strings")
    if not _is_str_map(obj["keys"]):
        raise bad_json("device_keys.keys must map key ids to keys")
    if not _is_signatures(obj["signatures"]):
        raise bad_json("device_keys.signatures must map user ids to key ids to signatures")
    if obj["user_id"] != user_id or obj["device_id"] != device_id:
        raise invalid_param("device_keys must be for the requesting user and device")


def _key_map(body: dict, name: str) -> dict[str, Any]:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_json(f"{name} must be an object")
    for key in value.values():
        if isinstance(key, dict):
            if not isinstance(key.get("key"), str) or not _is_signatures(key.get("signatures", {})):
                raise bad_json(f"each key object of {name} needs a key string and signatures")
        elif not isinstance(key, str):
            raise bad_json(f"each of {name} must be a key object")
    return value


def _merge_signatures(obj: dict, sigs: list[tuple[str, str, str]], viewer: str, owner: str) -> dict:
    """Add uploaded signatures (signer_user, signer_key_id, signature) that `viewer` may
    see: the owner's own, and the viewer's."""
    visible = [(u, k, s) for u, k, s in sigs if u in (owner, viewer)]
    if visible:
        merged = {u: dict(v) for u, v in (obj.get("signatures") or {}).items() if isinstance(v, dict)}
        for signer, key_id, sig in visible:
            merged.setdefault(signer, {})[key_id] = sig
        obj["signatures"] = merged
    return obj


# ---- /keys/upload ------------------------------------------------------------------------

async def upload_keys(req: Req):
    body = req.json()
    user_id, device_id = req.user_id, req.requester.device_id
    device_keys = body.get("device_keys")
    if device_keys is not None:
        _check_device_keys(device_keys, user_id, device_id)
        device_keys = {k: v for k, v in device_keys.items() if k != "unsigned"}

    one_time = []
    for full_id, key in _key_map(body, "one_time_keys").items():
        algorithm, key_id = _split_key_id(full_id, "one-time")
        one_time.append((algorithm, key_id, _dump(key)))

    fallback: dict[str, tuple[str, str]] = {}
    fallback_body = body.get("fallback_keys")
    name = "fallback_keys" if fallback_body is not None else "org.matrix.msc2732.fallback_keys"
    for full_id, key in _key_map(body, name).items():
        algorithm, key_id = _split_key_id(full_id, "fallback")
        if algorithm in fallback:
            raise invalid_param(f"only one fallback key per algorithm may be uploaded ({algorithm})")
        fallback[algorithm] = (key_id, _dump(key))

    def txn(cur):
        changed = False
        if device_keys is not None:
            changed = store.set_device_keys(cur, user_id, device_id, _dump(device_keys))
        store.add_one_time_keys(cur, user_id, device_id, one_time)
        for algorithm, (key_id, key_json) in fallback.items():
            store.set_fallback_key(cur, user_id, device_id, algorithm, key_id, key_json)
        return changed, store.one_time_key_counts(cur, user_id, device_id)

    try:
        changed, counts = await req.hs.db.run(txn)
    except store.OneTimeKeyConflict as e:
        raise invalid_param(f"one-time key {e.algorithm}:{e.key_id} already exists with"
                            " different contents") from None
    req.hs.sync.e2e_counts.invalidate(user_id, device_id)
    if changed:
        await _record_changes(req, [user_id])
    counts.setdefault("signed_curve25519", 0)
    return {"one_time_key_counts": counts}


# ---- /keys/query -------------------------------------------------------------------------

def _load_for_query(cur, user_ids: list[str]):
    return (store.device_keys_of_users(cur, user_ids),
            store.cross_signing_keys_of_users(cur, user_ids),
            store.signatures_on(cur, user_ids))


async def query_keys(req: Req):
    body = req.json()
    wanted = body.get("device_keys")
    if not isinstance(wanted, dict):
        raise bad_json("device_keys must be an object of user id to device ids")
    failures: dict[str, Any] = {}
    local: dict[str, list[str]] = {}
    remote: dict[str, list[str]] = {}
    for user_id, device_ids in wanted.items():
        if not isinstance(device_ids, list) or not all(isinstance(d, str) for d in device_ids):
            raise bad_json("device_keys must map each user id to a list of device ids")
        if req.hs.accounts.is_mine(user_id):
            local[user_id] = device_ids
        elif await _federates(req):
            remote[user_id] = device_ids
        else:
            _unreachable(failures, user_id)

    # Another tenant's users answer like users that do not exist: an empty device list.
    visible = await req.hs.tenancy.visible_users(req.user_id, local)
    result = await local_device_keys(req.hs, local, req.user_id, visible)
    if remote:  # other servers' users: asked over federation, each server at once
        found, remote_failures = await req.hs.federation.queries.keys_query(remote)
        for field, values in found.items():
            result[field].update(values)
        failures.update(remote_failures)
    result["failures"] = failures
    return result


async def _federates(req: Req) -> bool:
    """Whether the requester may reach other servers' users (tenant users of a tenant not
    opened to federation may not)."""
    federation = req.hs.federation
    return federation is not None and federation.exposure.tenant_open(await req.hs.tenancy.tenant_of(req.user_id))


async def local_device_keys(hs, local: dict[str, list[str]], viewer: str | None,
                            visible: set[str] | None = None) -> dict[str, Any]:
    """Device and cross-signing keys of local users (all devices, or the ones listed), as
    `viewer` may see them (None: another server, which never gets user-signing keys);
    users not in `visible` (when given) get an empty device list. Shared by /keys/query
    and the federation's user/keys/query."""
    devices, cross_signing, signatures = await hs.db.run(
        _load_for_query, sorted(visible if visible is not None else local))
    sigs_by_target: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
    for signer, signer_key, target_user, target_key, sig in signatures:
        sigs_by_target.setdefault((target_user, target_key), []).append((signer, signer_key, sig))

    result: dict[str, Any] = {"device_keys": {u: {} for u in local},
                              "master_keys": {}, "self_signing_keys": {}, "user_signing_keys": {}}
    for user_id, device_id, key_json, display_name in devices:
        only = local[user_id]
        if only and device_id not in only:
            continue
        obj = _merge_signatures(json.loads(key_json), sigs_by_target.get((user_id, device_id), []),
                                viewer, user_id)
        obj["unsigned"] = {"device_display_name": display_name} if display_name is not None else {}
        result["device_keys"][user_id][device_id] = obj

    for user_id, keys in cross_signing.items():
        for key_type, key_json in keys.items():
            if key_type == "user_signing" and user_id != viewer:
                continue
            obj = json.loads(key_json)
            public = _public_key(obj)
            obj = _merge_signatures(obj, sigs_by_target.get((user_id, public), []), viewer, user_id)
            result[f"{key_type}_keys"][user_id] = obj
    return result


def _public_key(obj: dict) -> str | None:
    keys = obj.get("keys")
    if isinstance(keys, dict) and len(keys) == 1:
        value = next(iter(keys.values()))
        return value if isinstance(value, str) else None
    return None


# ---- /keys/claim -------------------------------------------------------------------------

async def claim_keys(req: Req):
    body = req.json()
    wanted = body.get("one_time_keys")
    if not isinstance(wanted, dict):
        raise bad_json("one_time_keys must be an object of user id to device id to algorithm")
    failures: dict[str, Any] = {}
    requests: list[tuple[str, str, str]] = []
    remote: dict[str, dict[str, str]] = {}
    for user_id, devices in wanted.items():
        if not isinstance(devices, dict) or not all(isinstance(a, str) for a in devices.values()):
            raise bad_json("one_time_keys must map each user id to device ids and algorithms")
        if not req.hs.accounts.is_mine(user_id):
            if await _federates(req):
                remote[user_id] = devices
            else:
                _unreachable(failures, user_id)
            continue
        requests.extend((user_id, d, a) for d, a in devices.items())
    # Another tenant's users have no keys to claim, as if they did not exist.
    visible = await req.hs.tenancy.visible_users(req.user_id, {r[0] for r in requests})
    requests = [r for r in requests if r[0] in visible]

    claimed = await claim_local_keys(req.hs, requests)
    if remote:
        found, remote_failures = await req.hs.federation.queries.keys_claim(remote)
        claimed.update(found)
        failures.update(remote_failures)
    return {"one_time_keys": claimed, "failures": failures}


async def claim_local_keys(hs, requests: list[tuple[str, str, str]]) -> dict[str, Any]:
    """Claim one key per (user, device, algorithm) of local users; shared with federation."""
    claimed = await hs.db.run(store.claim_keys, requests)
    result: dict[str, Any] = {}
    for user_id, device_id, algorithm, key_id, key_json in claimed:
        hs.sync.e2e_counts.invalidate(user_id, device_id)
        result.setdefault(user_id, {}).setdefault(device_id, {})[f"{algorithm}:{key_id}"] = \
            json.loads(key_json)
    return result


# ---- /keys/changes -----------------------------------------------------------------------

async def key_changes(req: Req):
    from_token = req.query("from")
    if not from_token:
        raise missing_param("the from parameter is required")
    since = StreamToken.parse(from_token)
    upto = req.hs.sync.current_token()
    to_token = req.query("to")
    if to_token:
        parsed = StreamToken.parse(to_token)
        # A short token (`s<events>`) says nothing about the other streams.
        upto = StreamToken(events=min(parsed.events, upto.events),
                           device_lists=parsed.device_lists if to_token.count("_") >= 6 else upto.device_lists)
    changed, left = await req.hs.sync.device_lists.changes_for(
        req.user_id, since.events, upto.events, since.device_lists, upto.device_lists)
    # Someone whose tenant changed may still share a room: another tenant's users are
    # never mentioned.
    visible = await req.hs.tenancy.visible_users(req.user_id, set(changed) | set(left))
    return {"changed": [u for u in changed if u in visible], "left": [u for u in left if u in visible]}


# ---- cross-signing keys ------------------------------------------------------------------

def _check_cross_signing_key(obj: Any, user_id: str, usage: str) -> str:
    """Shape checks; returns the public key."""
    if not isinstance(obj, dict):
        raise bad_json("cross-signing keys must be objects")
    if obj.get("user_id") != user_id:
        raise invalid_param("cross-signing keys must belong to the requesting user")
    if not isinstance(obj.get("usage"), list) or usage not in obj["usage"]:
        raise invalid_param(f"the {usage} key must list {usage!r} in its usage")
    keys = obj.get("keys")
    if not isinstance(keys, dict) or len(keys) != 1:
        raise invalid_param("a cross-signing key must hold exactly one public key")
    key_id, public = next(iter(keys.items()))
    if not isinstance(public, str) or key_id != f"ed25519:{public}":
        raise invalid_param("a cross-signing key must be an ed25519 key named ed25519:<public key>")
    if "signatures" in obj and not isinstance(obj["signatures"], dict):
        raise bad_json("signatures must be an object")
    return public


def _verify(obj: dict, signer_user: str, signer_key_id: str, public_key: str) -> bool:
    """Does `obj` carry a valid signature by `signer_user`'s ed25519 key `public_key`,
    named `signer_key_id`?"""
    try:
        sig = obj["signatures"][signer_user][signer_key_id]
        signed = {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}
        signed["signatures"] = {signer_user: {signer_key_id: sig}}
        verify_signed_json(signed, signer_user, decode_verify_key_bytes(signer_key_id,
                                                                        decode_base64(public_key)))
        return True
    except Exception:  # missing, malformed or wrong: all the same to the caller
        return False


def _load_cross_signing(cur, user_id: str):
    return (store.cross_signing_keys_of_users(cur, [user_id]).get(user_id, {}),
            store.device_ids_of(cur, user_id))


async def upload_cross_signing_keys(req: Req):
    body = req.json()
    user_id = req.user_id
    given: dict[str, tuple[str, dict]] = {}  # key_type -> (public key, object)
    for field, key_type in CROSS_SIGNING_TYPES.items():
        obj = body.get(field)
        if obj is not None:
            given[key_type] = (_check_cross_signing_key(obj, user_id, key_type), obj)

    stored_json, device_ids = await req.hs.db.run(_load_cross_signing, user_id)
    stored = {t: json.loads(j) for t, j in stored_json.items()}
    # UIA protects replacing keys; a first upload (Element does it right after login) and
    # a repeat of exactly the stored keys (a retry after a lost response) go through.
    if "master" in stored and any(stored.get(t) != obj for t, (_, obj) in given.items()):
        await uia.require_password(req, user_id)
    if not given:
        return {}

    master = given.get("master") or ((_public_key(stored["master"]), stored["master"])
                                     if "master" in stored else None)
    if master is None or master[0] is None:
        raise missing_param("no master signing key is available")
    master_public = master[0]
    for key_type in ("self_signing", "user_signing"):
        if key_type in given and not _verify(given[key_type][1], user_id,
                                             f"ed25519:{master_public}", master_public):
            raise MatrixError(400, "M_INVALID_SIGNATURE",
                              f"the {key_type} key is not signed by the master key")
    for public, _ in given.values():
        if public in device_ids:
            raise forbidden("key id in use by a device")

    to_store = {t: (public, _dump(obj)) for t, (public, obj) in given.items()}
    await req.hs.db.run(store.set_cross_signing_keys, user_id, to_store)
    await _record_changes(req, [user_id])
    return {}


# ---- /keys/signatures/upload -------------------------------------------------------------

def _load_for_signing(cur, signer: str, targets: list[str]):
    users = sorted(set(targets) | {signer})
    devices: dict[str, dict[str, dict]] = {}
    for user_id, device_id, key_json, _ in store.device_keys_of_users(cur, users):
        devices.setdefault(user_id, {})[device_id] = json.loads(key_json)
    cross = {u: {t: json.loads(j) for t, j in keys.items()}
             for u, keys in store.cross_signing_keys_of_users(cur, users).items()}
    existing: dict[tuple[str, str], dict[str, str]] = {}
    for s_user, s_key, t_user, t_key, sig in store.signatures_on(cur, users):
        if s_user == signer:
            existing.setdefault((t_user, t_key), {})[s_key] = sig
    return devices, cross, existing


def _stripped(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if k not in ("signatures", "unsigned")}


def _failure(errcode: str, error: str) -> dict:
    return {"errcode": errcode, "error": error}


async def upload_signatures(req: Req):
    body = req.json()
    signer = req.user_id
    for user_id, objects in body.items():
        if not isinstance(objects, dict) or not all(isinstance(o, dict) for o in objects.values()):
            raise bad_json("the body must map user ids to key ids to signed key objects")
    # Another tenant's keys are unknown here, as if the user did not exist.
    visible = await req.hs.tenancy.visible_users(signer, body)
    devices, cross, existing = await req.hs.db.run(_load_for_signing, signer, sorted(visible))

    own_cross = cross.get(signer, {})
    ssk = _public_key(own_cross["self_signing"]) if "self_signing" in own_cross else None
    usk = _public_key(own_cross["user_signing"]) if "user_signing" in own_cross else None

    failures: dict[str, dict[str, Any]] = {}
    rows: list[tuple[str, str, str, str, str]] = []
    changed: set[str] = set()
    for target_user, objects in body.items():
        target_master = cross.get(target_user, {}).get("master")
        master_public = _public_key(target_master) if target_master else None
        for key_id, obj in objects.items():
            allowed: dict[str, str] = {}  # signer key id -> public key
            if target_user == signer and key_id in devices.get(signer, {}):
                stored = devices[signer][key_id]
                if ssk:
                    allowed[f"ed25519:{ssk}"] = ssk
            elif master_public is not None and key_id == master_public:
                stored = target_master
                if target_user == signer:
                    for dev_id, dev in devices.get(signer, {}).items():
                        public = (dev.get("keys") or {}).get(f"ed25519:{dev_id}")
                        if isinstance(public, str):
                            allowed[f"ed25519:{dev_id}"] = public
                elif usk:
                    allowed[f"ed25519:{usk}"] = usk
            else:
                failures.setdefault(target_user, {})[key_id] = _failure("M_NOT_FOUND", "unknown key")
                continue
            if _stripped(obj) != _stripped(stored):
                failures.setdefault(target_user, {})[key_id] = _failure(
                    "M_INVALID_SIGNATURE", "the signed object does not match the stored key")
                continue
            theirs = (obj.get("signatures") or {}).get(signer)
            theirs = theirs if isinstance(theirs, dict) else {}
            known = dict(((stored.get("signatures") or {}).get(signer) or {}))
            known.update(existing.get((target_user, key_id), {}))
            new = {k: v for k, v in theirs.items() if known.get(k) != v}
            bad = [k for k in new if k not in allowed or not _verify(obj, signer, k, allowed[k])]
            if bad:
                failures.setdefault(target_user, {})[key_id] = _failure(
                    "M_INVALID_SIGNATURE", f"invalid signature by {bad[0]}")
                continue
            for k, sig in new.items():
                rows.append((signer, k, target_user, key_id, sig))
                changed.add(target_user)

    if rows:
        await req.hs.db.run(store.add_signatures, rows)
        if changed - {signer}:
            changed.add(signer)  # the signer's own devices see their user-signing signatures
        await _record_changes(req, changed)
    return {"failures": failures}


def register(router: Router) -> None:
    router.client("POST", "/keys/upload", upload_keys)
    router.client("POST", "/keys/query", query_keys)
    router.client("POST", "/keys/claim", claim_keys)
    router.client("GET", "/keys/changes", key_changes)
    router.client("POST", "/keys/device_signing/upload", upload_cross_signing_keys)
    router.client("POST", "/keys/signatures/upload", upload_signatures)
