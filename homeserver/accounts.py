"""Accounts: registration, passwords (bcrypt, off the reactor), devices and access tokens
(random, stored as SHA-256 hashes, cached in memory by hash)."""
from __future__ import annotations

import hashlib
import secrets
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

import bcrypt
from twisted.internet import defer, threads

from homeserver.errors import MatrixError, forbidden
from homeserver.ids import LOCALPART_RE, new_device_id, split_id
from storage import accounts as accounts_store
from storage import admin_users as admin_users_store
from storage import appservice as as_store
from storage.accounts import TokenOwner

if TYPE_CHECKING:
    from homeserver.server import HomeServer


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def new_access_token(user_id: str) -> str:
    """A random access token opening with a short key of its user (`mxt_<8 hex>_...`): a
    proxy in front of several processes hashes on the key, so every token of a user
    reaches the same process (docs/scaling.md); the key tells nothing a holder of the
    token cannot ask /whoami."""
    return f"mxt_{user_routing_key(user_id)}_{secrets.token_urlsafe(32)}"


def user_routing_key(user_id: str) -> str:
    return hashlib.sha256(user_id.encode("utf-8")).hexdigest()[:8]


class Accounts:
    def __init__(self, hs: "HomeServer") -> None:
        self.hs = hs
        self._token_cache: OrderedDict[bytes, TokenOwner] = OrderedDict()

    # ---- identifiers ---------------------------------------------------------------

    def user_id_for(self, localpart_or_id: str) -> str:
        if localpart_or_id.startswith("@"):
            return localpart_or_id
        return f"@{localpart_or_id.lower()}:{self.hs.server_name}"

    def is_mine(self, user_id: str) -> bool:
        parts = split_id(user_id, "@")
        return parts is not None and parts[1] == self.hs.server_name

    def check_localpart(self, localpart: str) -> None:
        if not LOCALPART_RE.match(localpart):
            raise MatrixError(400, "M_INVALID_USERNAME",
                              "user names may only contain a-z, 0-9, and . _ = - / +")
        if len(f"@{localpart}:{self.hs.server_name}".encode()) > 255:
            raise MatrixError(400, "M_INVALID_USERNAME", "user id is longer than 255 bytes")

    # ---- passwords -----------------------------------------------------------------

    async def hash_password(self, password: str) -> str:
        rounds = self.hs.config.registration.bcrypt_rounds
        hashed = await threads.deferToThread(
            bcrypt.hashpw, password.encode("utf-8")[:72], bcrypt.gensalt(rounds))
        return hashed.decode("ascii")

    async def check_password(self, user_id: str, password: str) -> bool:
        user = await self.hs.db.run(accounts_store.get_user, user_id)
        if not user or user["deactivated"] or not user["password_hash"]:
            return False
        return await threads.deferToThread(
            bcrypt.checkpw, password.encode("utf-8")[:72], user["password_hash"].encode("ascii"))

    # ---- registration and login ----------------------------------------------------

    async def register(self, localpart: str, password: str | None, *, admin: bool = False,
                       displayname: str | None = None, appservice_id: str | None = None,
                       password_hash: str | None = None, guest: bool = False) -> str:
        """`password_hash` stands in for a password hashed earlier (by a UIA session)."""
        self.check_localpart(localpart)
        user_id = f"@{localpart}:{self.hs.server_name}"
        pw_hash = await self.hash_password(password) if password else password_hash

        def txn(cur) -> bool:
            created = accounts_store.create_user(cur, user_id, pw_hash, admin, _now(),
                                                 displayname if displayname is not None else localpart)
            if created and appservice_id:
                as_store.set_user_appservice(cur, user_id, appservice_id)
            if created and guest:
                accounts_store.set_guest(cur, user_id)
            return created

        if not await self.hs.db.run(txn):
            raise MatrixError(400, "M_USER_IN_USE", "that user id is taken")
        return user_id

    async def upgrade_guest(self, user_id: str, password: str | None) -> None:
        """Turn a guest into a full account with the same user id (and its devices)."""
        pw_hash = await self.hash_password(password) if password else None
        self.forget_tokens(await self.hs.db.run(accounts_store.upgrade_guest, user_id, pw_hash))

    # ---- one-time login tokens (m.login.token) -------------------------------------

    async def create_login_token(self, user_id: str) -> tuple[str, int]:
        ttl = self.hs.config.registration.login_token_ttl_ms
        token = "mlt_" + secrets.token_urlsafe(32)
        await self.hs.db.run(as_store.add_login_token, hash_token(token), user_id, _now() + ttl)
        return token, ttl

    async def use_login_token(self, token: str) -> str | None:
        user_id = await self.hs.db.run(as_store.use_login_token, hash_token(token), _now())
        if user_id is None:
            return None
        user = await self.hs.db.run(accounts_store.get_user, user_id)
        return user_id if user and not user["deactivated"] else None

    async def new_session(self, user_id: str, device_id: str | None,
                          display_name: str | None) -> tuple[str, str]:
        """Create (or reuse) a device and a fresh access token for it."""
        device_id = device_id or new_device_id()
        token = new_access_token(user_id)

        def txn(cur) -> bool:
            changed = accounts_store.upsert_device(cur, user_id, device_id, display_name)
            accounts_store.add_access_token(cur, hash_token(token), user_id, device_id, _now())
            return changed

        if await self.hs.db.run(txn):
            await self.device_list_changed(user_id)
        return token, device_id

    async def rename_device(self, user_id: str, device_id: str, display_name: str) -> bool:
        """False if there is no such device."""
        if not await self.hs.db.run(accounts_store.rename_device, user_id, device_id, display_name):
            return False
        await self.device_list_changed(user_id)
        return True

    async def device_list_changed(self, user_id: str) -> None:
        """A device was added, renamed or removed: the user's other devices and everyone
        sharing a room with them re-query the user's keys."""
        if self.hs.sync is not None:
            await self.hs.sync.device_lists.record_change(user_id)

    # ---- tokens --------------------------------------------------------------------

    async def owner_of_token(self, token: str) -> TokenOwner | None:
        h = hash_token(token)
        owner = self._token_cache.get(h)
        if owner is None:
            owner = await self.hs.db.run(accounts_store.get_token_owner, h)
            if owner is None:
                return None
            self._token_cache[h] = owner
            if len(self._token_cache) > 100_000:
                self._token_cache.popitem(last=False)
        return owner

    def forget_tokens(self, hashes: list[bytes], replicate: bool = True) -> defer.Deferred:
        """Fires once the other processes have been told (several processes)."""
        for h in hashes:
            self._token_cache.pop(h, None)
        told = []
        if replicate and hashes and self.hs.replication is not None:  # the other processes too
            for i in range(0, len(hashes), 50):  # NOTIFY payloads stay under 8 kB
                told.append(self.hs.replication.invalidate("tokens", ",".join(h.hex() for h in hashes[i:i + 50])))
        return defer.gatherResults(told, consumeErrors=True)

    async def logout(self, token: str) -> None:
        owner = await self.owner_of_token(token)
        if owner is None:
            return
        await self.delete_devices(owner.user_id, [owner.device_id])

    async def delete_devices(self, user_id: str, device_ids: list[str]) -> None:
        hashes = await self.hs.db.run(accounts_store.delete_devices, user_id, device_ids)
        await self._devices_gone(user_id, hashes)

    async def logout_all(self, user_id: str, except_device: str | None = None) -> None:
        hashes = await self.hs.db.run(accounts_store.delete_all_devices, user_id, except_device)
        await self._devices_gone(user_id, hashes)

    async def _devices_gone(self, user_id: str, token_hashes: list[bytes]) -> None:
        await self.forget_tokens(token_hashes)
        if self.hs.pushers is not None:
            await self.hs.pushers.tokens_gone(user_id, token_hashes)
        await self.device_list_changed(user_id)

    async def set_admin(self, user_id: str, admin: bool) -> None:
        """The server-admin flag, which the cached owners of the user's tokens carry."""
        def txn(cur) -> list[bytes]:
            admin_users_store.set_admin(cur, user_id, admin)
            return accounts_store.token_hashes_of(cur, user_id)

        await self.forget_tokens(await self.hs.db.run(txn))

    async def deactivate(self, user_id: str) -> None:
        def txn(cur):
            hashes = accounts_store.token_hashes_of(cur, user_id)
            accounts_store.deactivate_user(cur, user_id)
            return hashes

        await self._devices_gone(user_id, await self.hs.db.run(txn))

    async def require_active_user(self, user_id: str) -> dict:
        user = await self.hs.db.run(accounts_store.get_user, user_id)
        if user is None:
            raise MatrixError(404, "M_NOT_FOUND", "no such user")
        if user["deactivated"]:
            raise forbidden("this account has been deactivated")
        return user


def _now() -> int:
    return int(time.time() * 1000)
