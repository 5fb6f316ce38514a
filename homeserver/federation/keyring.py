"""Other servers' signing keys: fetched from the server itself (`/_matrix/key/v2/server`),
else through the configured notaries (`/_matrix/key/v2/query`), each response checked
against its own signatures (and the notary's); kept in memory and in `server_keys`.
Also what this server publishes about its own keys, and the notary answers it gives."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from signedjson.key import VerifyKey, decode_verify_key_base64, encode_verify_key_base64, get_verify_key
from signedjson.sign import SignatureVerifyException, sign_json, verify_signed_json

from homeserver.async_utils import Coalescer
from homeserver.federation.client import FederationError
from homeserver.redaction import prune_event_dict
from homeserver.room_versions import RoomVersion
from homeserver.signing_key import key_id as key_id_of
from storage import federation as store

if TYPE_CHECKING:
    from homeserver.federation.client import FederationClient
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)
# Keys whose valid_until_ts lies further ahead are treated as valid for this long only
# (the spec's cap for room versions with key validity).
MAX_VALIDITY_MS = 7 * 24 * 3600 * 1000
FAILURE_BACKOFF_S = 10.0


class KeyLookupError(Exception):
    """A key could not be found, or a signature did not verify."""


@dataclass
class FetchedKey:
    verify_key: VerifyKey
    valid_until_ts: int
    expired_ts: int | None
    key_json: str  # the signed response that proved it

    def valid_at(self, ts: int) -> bool:
        if self.expired_ts is not None:
            return ts < self.expired_ts
        return ts <= self.valid_until_ts


def _now() -> int:
    return int(time.time() * 1000)


def _decode_key(key_id: str, b64: Any) -> VerifyKey | None:
    alg, _, version = key_id.partition(":")
    if alg != "ed25519" or not isinstance(b64, str):
        return None
    try:
        return decode_verify_key_base64(alg, version, b64)
    except Exception:
        return None


def parse_key_response(response: Any, server_name: str, fetched_ts: int) -> dict[str, FetchedKey]:
    """The keys a /_matrix/key/v2/server response proves, after checking it is for
    `server_name` and signed by at least one of its own current keys."""
    if not isinstance(response, dict) or response.get("server_name") != server_name:
        raise KeyLookupError(f"key response is not for {server_name}")
    valid_until = response.get("valid_until_ts")
    if not isinstance(valid_until, int):
        raise KeyLookupError("key response has no valid_until_ts")
    valid_until = min(valid_until, fetched_ts + MAX_VALIDITY_MS)
    text = json.dumps(response, ensure_ascii=False)
    keys: dict[str, FetchedKey] = {}
    for key_id, entry in (response.get("verify_keys") or {}).items():
        vk = _decode_key(key_id, (entry or {}).get("key") if isinstance(entry, dict) else None)
        if vk is not None:
            keys[key_id] = FetchedKey(vk, valid_until, None, text)
    signed_by_own = False
    for key_id in (response.get("signatures") or {}).get(server_name, {}):
        if key_id in keys:
            try:
                verify_signed_json(response, server_name, keys[key_id].verify_key)
            except SignatureVerifyException as e:
                raise KeyLookupError(f"key response of {server_name} has a bad signature: {e}") from None
            signed_by_own = True
    if not signed_by_own:
        raise KeyLookupError(f"key response of {server_name} is not signed by its own keys")
    for key_id, entry in (response.get("old_verify_keys") or {}).items():
        if not isinstance(entry, dict) or not isinstance(entry.get("expired_ts"), int):
            continue
        vk = _decode_key(key_id, entry.get("key"))
        if vk is not None and key_id not in keys:
            keys[key_id] = FetchedKey(vk, entry["expired_ts"], entry["expired_ts"], text)
    return keys


class KeyRing:
    def __init__(self, hs: "HomeServer", client: "FederationClient") -> None:
        self.hs = hs
        self.client = client
        self._keys: dict[str, dict[str, FetchedKey]] = {}
        self._loaded: set[str] = set()
        self._fetching = Coalescer()
        self._failed_at: dict[str, float] = {}
        self._notaries = hs.config.federation.trusted_key_servers

    # ---- our own keys ----------------------------------------------------------------

    def own_key_response(self) -> dict:
        """The signed /_matrix/key/v2/server answer."""
        fed = self.hs.config.federation
        key = self.hs.signing_key
        body = {
            "server_name": self.hs.server_name,
            "verify_keys": {key_id_of(key): {"key": encode_verify_key_base64(key.verify_key)}},
            "old_verify_keys": {kid: {"key": old.key, "expired_ts": old.expired_ts}
                                for kid, old in fed.old_signing_keys.items()},
            "valid_until_ts": _now() + fed.key_valid_for_ms,
        }
        return sign_json(body, self.hs.server_name, key)

    def _own_key(self, key_id: str) -> FetchedKey | None:
        key = self.hs.signing_key
        if key_id == key_id_of(key):
            return FetchedKey(get_verify_key(key), 2**62, None, "")
        old = self.hs.config.federation.old_signing_keys.get(key_id)
        vk = _decode_key(key_id, old.key) if old else None
        return FetchedKey(vk, old.expired_ts, old.expired_ts, "") if vk and old else None

    # ---- other servers' keys -----------------------------------------------------------

    async def get_key(self, server_name: str, key_id: str, min_valid_ts: int) -> VerifyKey:
        """The server's key `key_id`, valid at `min_valid_ts` (0: any validity)."""
        if server_name == self.hs.server_name:
            own = self._own_key(key_id)
            if own is None:
                raise KeyLookupError(f"this server has no key {key_id}")
            return own.verify_key
        await self._load(server_name)
        found = self._keys.get(server_name, {}).get(key_id)
        if found is None or not found.valid_at(min_valid_ts):
            await self._fetching.run(server_name, lambda: self._fetch(server_name, key_id, min_valid_ts))
            found = self._keys.get(server_name, {}).get(key_id)
        if found is None:
            raise KeyLookupError(f"no key {key_id} of {server_name}")
        if not found.valid_at(min_valid_ts):
            raise KeyLookupError(f"key {key_id} of {server_name} is not valid at {min_valid_ts}")
        return found.verify_key

    async def _load(self, server_name: str) -> None:
        if server_name in self._loaded:
            return
        rows = await self.hs.db.run(store.get_server_keys, server_name)
        keys = self._keys.setdefault(server_name, {})
        for key_id, b64, valid_until, expired, text in rows:
            vk = _decode_key(key_id, b64)
            if vk is not None and key_id not in keys:
                keys[key_id] = FetchedKey(vk, valid_until, expired, text)
        self._loaded.add(server_name)

    async def _fetch(self, server_name: str, key_id: str | None, min_valid_ts: int) -> None:
        """Fetch the server's keys (directly, then from notaries until `key_id`, or any
        key when None, is known and valid at `min_valid_ts`)."""
        failed = self._failed_at.get(server_name)
        if failed is not None and time.monotonic() - failed < FAILURE_BACKOFF_S:
            return
        keys: dict[str, FetchedKey] = {}
        try:
            response = await self.client.get(server_name, "/_matrix/key/v2/server", signed=False, timeout=30)
            keys = parse_key_response(response, server_name, _now())
        except (FederationError, KeyLookupError) as e:
            logger.info("fetching the keys of %s directly failed: %s", server_name, e)
        def satisfied() -> bool:
            wanted = [keys[key_id]] if key_id in keys else [] if key_id else list(keys.values())
            return any(k.valid_at(min_valid_ts) for k in wanted)

        if not satisfied():
            for notary in self._notaries:
                try:
                    keys.update(await self._from_notary(notary, server_name, key_id, min_valid_ts))
                except (FederationError, KeyLookupError) as e:
                    logger.info("notary %s could not give the keys of %s: %s", notary.server_name, server_name, e)
                if satisfied():
                    break
        if not keys:
            self._failed_at[server_name] = time.monotonic()
            return
        self._failed_at.pop(server_name, None)
        await self._remember(server_name, keys)

    async def _remember(self, server_name: str, keys: dict[str, FetchedKey]) -> None:
        cached = self._keys.setdefault(server_name, {})
        now = _now()
        rows = []
        for kid, k in keys.items():
            old = cached.get(kid)
            if old is None or old.valid_until_ts <= k.valid_until_ts:
                cached[kid] = k
            rows.append((server_name, kid, encode_verify_key_base64(k.verify_key), k.valid_until_ts,
                         k.expired_ts, now, k.key_json))
        await self.hs.db.run(store.store_server_keys, rows)

    async def _notary_key(self, notary, key_id: str) -> VerifyKey:
        if notary.verify_keys:
            vk = _decode_key(key_id, notary.verify_keys.get(key_id))
            if vk is None:
                raise KeyLookupError(f"notary {notary.server_name} signed with an unconfigured key {key_id}")
            return vk
        return await self.get_key(notary.server_name, key_id, 0)

    async def _from_notary(self, notary, server_name: str, key_id: str | None,
                           min_valid_ts: int) -> dict[str, FetchedKey]:
        criteria = {key_id: {"minimum_valid_until_ts": min_valid_ts}} if key_id else {}
        body = {"server_keys": {server_name: criteria}}
        answer = await self.client.post(notary.server_name, "/_matrix/key/v2/query", body, signed=False,
                                        timeout=30)
        found: dict[str, FetchedKey] = {}
        for response in (answer or {}).get("server_keys", []) if isinstance(answer, dict) else []:
            if not isinstance(response, dict) or response.get("server_name") != server_name:
                continue
            notary_sigs = (response.get("signatures") or {}).get(notary.server_name, {})
            verified = False
            for nkid in notary_sigs:
                try:
                    verify_signed_json(response, notary.server_name, await self._notary_key(notary, nkid))
                    verified = True
                    break
                except (SignatureVerifyException, KeyLookupError):
                    continue
            if not verified:
                raise KeyLookupError(f"notary {notary.server_name}'s answer for {server_name} is not signed by it")
            # The notary's signature must not stand in for the origin's own.
            origin_only = dict(response)
            origin_only["signatures"] = {server_name: response["signatures"].get(server_name, {})}
            keys = parse_key_response(origin_only, server_name, _now())
            for kid, k in keys.items():
                k.key_json = json.dumps(response, ensure_ascii=False)
            found.update(keys)
        return found

    # ---- verification --------------------------------------------------------------

    async def verify_json(self, server_name: str, obj: dict, min_valid_ts: int) -> None:
        """`obj` must carry a verifying signature of `server_name` (any of its keys)."""
        sigs = (obj.get("signatures") or {}).get(server_name) if isinstance(obj.get("signatures"), dict) else None
        if not isinstance(sigs, dict) or not sigs:
            raise KeyLookupError(f"not signed by {server_name}")
        last: Exception | None = None
        for key_id in sigs:
            if not key_id.startswith("ed25519:"):
                continue
            try:
                vk = await self.get_key(server_name, key_id, min_valid_ts)
                verify_signed_json(obj, server_name, vk)
                return
            except (KeyLookupError, SignatureVerifyException) as e:
                last = e
        raise KeyLookupError(f"signature of {server_name} does not verify: {last}")

    async def verify_event(self, pdu: dict, rv: RoomVersion) -> None:
        """Every server that must have signed the event did (the sender's; in v1/v2 the
        event id's; for restricted joins the authorising user's)."""
        pruned = prune_event_dict(pdu, rv)
        pruned.pop("unsigned", None)
        min_ts = pdu.get("origin_server_ts", 0) if rv.enforce_key_validity else 0
        if not isinstance(min_ts, int):
            min_ts = 0
        for server in required_signers(pdu, rv):
            await self.verify_json(server, pruned, min_ts)

    # ---- notary answers ------------------------------------------------------------

    async def notary_answer(self, server_name: str, key_ids: list[str], min_valid_ts: int) -> list[dict]:
        """Signed key responses of `server_name` for /_matrix/key/v2/query, each
        countersigned by this server."""
        if server_name == self.hs.server_name:
            return [self.own_key_response()]
        await self._load(server_name)
        known = self._keys.get(server_name, {})
        fresh = [k for k in known.values() if k.valid_until_ts >= min_valid_ts and k.expired_ts is None]
        wanted_missing = [kid for kid in key_ids if kid not in known or not known[kid].valid_at(min_valid_ts)]
        if not fresh or wanted_missing or not key_ids and not known:
            try:
                await self._fetching.run(server_name, lambda: self._fetch(
                    server_name, wanted_missing[0] if wanted_missing else None, min_valid_ts))
            except Exception as e:
                logger.info("notary fetch for %s failed: %s", server_name, e)
            known = self._keys.get(server_name, {})
        texts = {k.key_json for kid, k in known.items() if not key_ids or kid in key_ids}
        out = []
        for text in texts:
            try:
                response = json.loads(text)
            except ValueError:
                continue
            response.setdefault("signatures", {})
            response["signatures"] = {server_name: response["signatures"].get(server_name, {})}
            out.append(sign_json(response, self.hs.server_name, self.hs.signing_key))
        return out


def required_signers(pdu: dict, rv: RoomVersion) -> list[str]:
    servers = []
    sender = pdu.get("sender")
    if isinstance(sender, str) and ":" in sender:
        servers.append(sender.split(":", 1)[1])
    if not rv.event_ids_are_hashes:
        event_id = pdu.get("event_id")
        if isinstance(event_id, str) and ":" in event_id:
            servers.append(event_id.split(":", 1)[1])
    if rv.restricted_join_rule and pdu.get("type") == "m.room.member" \
            and isinstance(pdu.get("content"), dict) and pdu["content"].get("membership") == "join":
        via = pdu["content"].get("join_authorised_via_users_server")
        if isinstance(via, str) and ":" in via:
            servers.append(via.split(":", 1)[1])
    return list(dict.fromkeys(servers))
