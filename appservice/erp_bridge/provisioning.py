"""Tenants, users and business objects: what the ERP asks for, made true on the
homeserver through the client-server API.

Every operation is a reconciliation: it validates the whole request against the bridge's
tables first (so bad input creates nothing), then brings the homeserver to the wanted
state step by idempotent step (register if missing, create a room only if its alias does
not resolve, set a name only if it differs, invite and join only who is missing), and
records the result last. A call interrupted half-way (homeserver down, bridge killed) is
finished by simply repeating it. Rooms are found again through their aliases, which sit
in the bridge's exclusive namespace, so a crash between "room created" and "room
recorded" never makes a second room.

Tenancy: the homeserver refuses to put a user into a room of another tenant, and fixes a
room's tenant from its creator. So each tenant has its own bot user (tenant set before it
creates anything) that creates and administers the tenant's rooms; the main bridge bot
has no tenant and never enters them.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from urllib.parse import quote

from appservice.erp_bridge import store
from appservice.erp_bridge.config import BridgeConfig
from appservice.erp_bridge.db import Database
from appservice.erp_bridge.errors import ApiError, conflict, forbidden, invalid, not_found
from appservice.erp_bridge.ids import Ids, is_erp_id, is_object_type
from appservice.erp_bridge.locks import KeyedLock
from appservice.erp_bridge.matrix import MatrixClient, MatrixError
from appservice.erp_bridge.models import ObjectBody, TenantBody, UserBody

logger = logging.getLogger(__name__)

TENANT_KEY = "io.erpchat.tenant"          # create-event content key: the room's tenant
OBJECT_STATE = "io.erpchat.object"        # state event (key "") with the object's fields
ERP_TXN_KEY = "io.erpchat.erp_txn_id"     # content key on messages the ERP posted
BOT_DISPLAYNAME = "ERP"
# How far back a retried message looks for a send that may have landed before a crash.
_FIND_SENT_PAGES = 5
_FIND_SENT_PAGE_SIZE = 100


def _fault_point(name: str, key: str) -> None:
    """Test-only crash injection: with ERP_BRIDGE_FAULT=<name>:<key> in the environment the
    process dies here (as if SIGKILLed), to test recovery from exactly this point."""
    fault = os.environ.get("ERP_BRIDGE_FAULT")
    if fault and fault == f"{name}:{key}":
        logger.error("fault injection %s: exiting now", fault)
        os._exit(137)


def general_room_name(tenant_name: str) -> str:
    return f"{tenant_name} – General"


CLOSED_PREFIX = "[Closed] "
# events_default of a closed object room: above every person's level (0), so only the
# tenant's bot (100) can post; history stays readable.
CLOSED_EVENTS_DEFAULT = 100
OPEN_EVENTS_DEFAULT = 0


def request_hash(sender: str | None, body: str, *extra: str) -> str:
    """What a txn_id stands for: the same txn_id with another request is a conflict."""
    return hashlib.sha256(json.dumps([sender, body, *extra] if extra else [sender, body]).encode()).hexdigest()


def homeserver_txn_id(tenant_id: str, object_type: str, object_id: str, txn_id: str) -> str:
    digest = hashlib.sha256(f"{tenant_id}\0{object_type}\0{object_id}\0{txn_id}".encode()).hexdigest()
    return f"erp.{digest[:40]}"


def room_title(title: str, state: str) -> str:
    return CLOSED_PREFIX + title if state == "closed" else title


def check_object_key(object_type: str, object_id: str) -> None:
    if not is_object_type(object_type):
        raise invalid("object_type must be 1-32 characters of a-z 0-9 - starting with a letter")
    if not is_erp_id(object_id):
        raise invalid("object_id must be 1-64 characters of A-Z a-z 0-9 . _ - starting with a letter or digit")


def check_erp_id(value: str, what: str) -> None:
    if not is_erp_id(value):
        raise invalid(f"{what} must be 1-64 characters of A-Z a-z 0-9 . _ - starting with a letter or digit")


class Provisioner:
    def __init__(self, config: BridgeConfig, db: Database, matrix: MatrixClient) -> None:
        self.config = config
        self.db = db
        self.matrix = matrix
        self.ids = Ids(config.appservice.namespace_prefix, config.homeserver.server_name)
        self.server_name = config.homeserver.server_name
        self.lock = KeyedLock()
        self._bots_ready: set[str] = set()

    # ---- look-ups shared by every route ------------------------------------------------

    async def tenant(self, tenant_id: str, *, writable: bool = False) -> store.Tenant:
        """The tenant, or 404; `writable`: a removed tenant is read-only (409)."""
        check_erp_id(tenant_id, "tenant_id")
        tenant = await self.db.run(store.get_tenant, tenant_id)
        if tenant is None:
            raise not_found(f"unknown tenant {tenant_id!r}")
        if writable and tenant.state == "removed":
            raise conflict(f"tenant {tenant_id!r} was removed")
        return tenant

    async def object(self, tenant_id: str, object_type: str, object_id: str) -> tuple[store.Tenant, store.Object]:
        """The tenant's object, or 404: another tenant's object of the same type and id
        is a different object, so it is as missing as one that does not exist."""
        check_object_key(object_type, object_id)
        tenant = await self.tenant(tenant_id)
        obj = await self.db.run(store.get_object, tenant_id, object_type, object_id)
        if obj is None:
            raise not_found(f"unknown {object_type} {object_id!r} of tenant {tenant_id!r}")
        return tenant, obj

    async def user(self, tenant_id: str, erp_user_id: str) -> tuple[store.Tenant, store.User]:
        """The tenant's user, or 404 (another tenant's user answers the same)."""
        check_erp_id(erp_user_id, "erp_user_id")
        tenant = await self.tenant(tenant_id)
        user = await self.db.run(store.get_user, erp_user_id)
        if user is None or user.tenant_id != tenant_id:
            raise not_found(f"unknown user {erp_user_id!r} of tenant {tenant_id!r}")
        return tenant, user

    # ---- tenants -----------------------------------------------------------------------

    async def put_tenant(self, tenant_id: str, body: TenantBody) -> dict:
        check_erp_id(tenant_id, "tenant_id")
        async with self.lock(("tenant", tenant_id)):
            existing = await self.db.run(store.get_tenant, tenant_id)
            if existing is not None and existing.state == "removed":
                raise conflict(f"tenant {tenant_id!r} was removed")
            bot = await self._ensure_bot(tenant_id)
            space_id = await self._ensure_room(
                self.ids.space_alias_localpart(tenant_id), bot,
                store.Room("", tenant_id, "space", None, None, ""),
                {
                    "name": body.name,
                    "preset": "private_chat",
                    "visibility": "private",
                    "creation_content": {"type": "m.space", TENANT_KEY: tenant_id},
                    # A space holds no conversation: only the bot posts in it.
                    "power_level_content_override": {"events_default": 100, "invite": 50},
                })
            general_id = await self._ensure_room(
                self.ids.general_alias_localpart(tenant_id), bot,
                store.Room("", tenant_id, "general", None, None, ""),
                {
                    "name": general_room_name(body.name),
                    "preset": "private_chat",
                    "visibility": "private",
                    "creation_content": {TENANT_KEY: tenant_id},
                    "power_level_content_override": {"invite": 50},
                    "initial_state": [self._parent_state(space_id)],
                })
            await self._ensure_state(general_id, "m.space.parent", space_id,
                                     self._parent_state(space_id)["content"], bot)
            await self._ensure_state(space_id, "m.space.child", general_id,
                                     {"via": [self.server_name], "suggested": True, "order": "0000"}, bot)
            await self._ensure_name(space_id, body.name, bot)
            await self._ensure_name(general_id, general_room_name(body.name), bot)
            await self.db.run(store.upsert_tenant, store.Tenant(
                tenant_id, body.name, bot, space_id, general_id))
        return {"tenant_id": tenant_id, "space_id": space_id, "general_room_id": general_id}

    async def remove_tenant(self, tenant_id: str, erase_users: bool) -> dict:
        """Users deactivated (or erased), object rooms and the general room closed; the
        tenant stays readable. Marked removed first, so a repeat finishes a cut-off run."""
        tenant = await self.tenant(tenant_id)
        async with self.lock(("tenant", tenant_id)):
            await self.db.run(store.set_tenant_state, tenant_id, "removed")
        users = await self.db.run(store.tenant_users, tenant_id)
        for user in users:
            if user.state != "deleted" or (erase_users and not user.erase):
                await self.delete_user(tenant_id, user.erp_user_id, erase_users)
        objects = await self.db.run(store.tenant_objects, tenant_id)
        for obj in objects:
            if obj.state != "closed":
                await self.set_object_state(tenant_id, obj.object_type, obj.object_id, "closed")
        bot = await self._ensure_bot(tenant_id)
        await self._ensure_closed(tenant.general_room_id, True, bot)
        await self._ensure_name(tenant.general_room_id, room_title(general_room_name(tenant.name), "closed"), bot)
        logger.info("tenant %s removed: %d users, %d objects", tenant_id, len(users), len(objects))
        return {"tenant_id": tenant_id, "state": "removed", "users": len(users), "objects": len(objects)}

    async def _ensure_bot(self, tenant_id: str) -> str:
        bot = self.ids.tenant_bot(tenant_id)
        if tenant_id in self._bots_ready:
            return bot
        await self.matrix.register(self.ids.tenant_bot_localpart(tenant_id))
        # The tenant must be set before the bot creates (or enters) any room.
        await self.matrix.set_tenant(bot, tenant_id)
        if await self.matrix.get_displayname(bot) != BOT_DISPLAYNAME:
            await self.matrix.set_displayname(bot, BOT_DISPLAYNAME)
        self._bots_ready.add(tenant_id)
        return bot

    def _parent_state(self, space_id: str) -> dict:
        return {"type": "m.space.parent", "state_key": space_id,
                "content": {"via": [self.server_name], "canonical": True}}

    async def _ensure_room(self, alias_localpart: str, creator: str, record: store.Room,
                           create_body: dict) -> str:
        """The room behind the alias, created (by `creator`) if the alias does not resolve,
        and recorded in erp_bridge.rooms before anyone but the creator can be in it."""
        alias = self.ids.alias(alias_localpart)
        room_id = await self.matrix.resolve_alias(alias, creator)
        if room_id is None:
            try:
                room_id = await self.matrix.create_room(
                    creator, {**create_body, "room_alias_name": alias_localpart})
                logger.info("created room %s (%s)", room_id, alias)
            except MatrixError as e:
                if e.errcode != "M_ROOM_IN_USE":
                    raise
                room_id = await self.matrix.resolve_alias(alias, creator)  # made meanwhile
                if room_id is None:
                    raise
        record.room_id = room_id
        record.alias = alias
        await self.db.run(store.record_room, record)
        return room_id

    async def _ensure_state(self, room_id: str, event_type: str, state_key: str, content: dict,
                            as_user: str) -> None:
        current = await self.matrix.get_state(room_id, event_type, state_key, as_user)
        if current != content:
            await self.matrix.put_state(room_id, event_type, state_key, content, as_user)

    async def _ensure_name(self, room_id: str, name: str, as_user: str) -> None:
        current = await self.matrix.get_state(room_id, "m.room.name", "", as_user)
        if (current or {}).get("name") != name:
            await self.matrix.put_state(room_id, "m.room.name", "", {"name": name}, as_user)

    async def _ensure_closed(self, room_id: str, closed: bool, bot: str) -> None:
        """Closed: people cannot post, react or redact (events_default above their level);
        open: they can again. Everything else in the power levels is kept."""
        levels = await self.matrix.get_state(room_id, "m.room.power_levels", "", bot) or {}
        wanted = CLOSED_EVENTS_DEFAULT if closed else OPEN_EVENTS_DEFAULT
        if levels.get("events_default", 0) != wanted:
            await self.matrix.put_state(room_id, "m.room.power_levels", "",
                                        {**levels, "events_default": wanted}, bot)

    async def _ensure_member(self, room_id: str, user_id: str, inviter: str,
                             members: dict[str, str] | None = None) -> None:
        if members is None:
            members = await self.matrix.members(room_id, inviter)
        membership = members.get(user_id)
        if membership == "join":
            return
        if membership != "invite":
            await self.matrix.invite(room_id, user_id, inviter)
        await self.matrix.join(room_id, user_id)

    # ---- users -------------------------------------------------------------------------

    async def put_user(self, path_tenant: str | None, erp_user_id: str, body: UserBody) -> dict:
        check_erp_id(erp_user_id, "erp_user_id")
        if path_tenant is not None and body.tenant_id not in (None, path_tenant):
            raise invalid("tenant_id in the body names another tenant than the path")
        tenant_id = path_tenant or body.tenant_id
        if tenant_id is None:
            raise ApiError(400, "M_BAD_JSON", "tenant_id: Field required")
        async with self.lock(("user", erp_user_id)):
            tenant = await self.db.run(store.get_tenant, tenant_id)
            if tenant is None:
                raise not_found(f"unknown tenant {tenant_id!r}: PUT /_erp/v1/tenants/{{tenant_id}} first")
            if tenant.state == "removed":
                raise conflict(f"tenant {tenant_id!r} was removed")
            existing = await self.db.run(store.get_user, erp_user_id)
            if existing and existing.tenant_id != tenant_id:
                raise conflict(f"user {erp_user_id!r} belongs to tenant {existing.tenant_id!r}; "
                               "a user cannot move to another tenant")
            if existing and existing.state in ("deleting", "deleted"):
                raise conflict(f"user {erp_user_id!r} was deleted; a deleted user cannot come back "
                               "(Matrix user ids are never reused): give the person a new id")
            user_id = self.ids.user(erp_user_id)
            await self.matrix.register(self.ids.user_localpart(erp_user_id))
            # Tenant first: the homeserver only lets tenant users into the tenant's rooms.
            await self.matrix.set_tenant(user_id, tenant_id)
            if await self.matrix.get_displayname(user_id) != body.display_name:
                await self.matrix.set_displayname(user_id, body.display_name)
            if body.active:
                bot = await self._ensure_bot(tenant.tenant_id)
                for room_id in (tenant.space_id, tenant.general_room_id):
                    await self._ensure_member(room_id, user_id, bot)
                if existing is not None and not existing.active:
                    # Reactivated: back into the objects that still list them (unless they
                    # had left one by themselves).
                    for obj in await self.db.run(store.objects_with_participant, tenant_id, erp_user_id):
                        members = await self.matrix.member_events(obj.room_id, bot)
                        if not self._left_by_themselves(members.get(user_id), user_id):
                            await self._ensure_member(obj.room_id, user_id, bot)
            else:
                await self.matrix.logout_all(user_id)
                await self._remove_from_rooms(tenant, user_id, "deactivated in the ERP")
            state = "active" if body.active else "inactive"
            await self.db.run(store.upsert_user, store.User(
                erp_user_id, user_id, tenant_id, body.display_name, body.email, body.active, state))
        return {"user_id": user_id}

    async def _remove_from_rooms(self, tenant: store.Tenant, user_id: str, reason: str) -> None:
        """Take the user out of every room they are in: the tenant's bot kicks them from the
        bridge's rooms (so the bridge can tell this from leaving by themselves); any other
        room they leave themselves. Their messages stay in the rooms' history."""
        bridge_rooms = {r.room_id for r in await self.db.run(store.tenant_rooms, tenant.tenant_id)}
        for room_id in await self.matrix.joined_rooms(user_id):
            try:
                if room_id in bridge_rooms:
                    await self.matrix.kick(room_id, user_id, reason, tenant.bot_user_id)
                else:
                    await self.matrix.leave(room_id, user_id)
            except MatrixError as e:
                if e.status != 403:  # not in the room any more: nothing to do
                    raise

    async def delete_user(self, tenant_id: str, erp_user_id: str, erase: bool) -> dict:
        """Deactivate the user's Matrix account for good; with `erase`, first clear their
        profile and redact everything they sent in the tenant's rooms (GDPR erasure). Only
        the client-server and application-service APIs are used, so this works against
        Synapse too. Repeatable: a cut-off run is finished by repeating it."""
        tenant, user = await self.user(tenant_id, erp_user_id)
        erase = erase or user.erase
        async with self.lock(("user", erp_user_id)):
            await self.db.run(store.set_user_state, erp_user_id,
                              "deleted" if user.state == "deleted" else "deleting", erase)
            account_usable = True
            try:
                await self.matrix.logout_all(user.user_id)
            except MatrixError as e:
                if e.status not in (401, 403):
                    raise
                account_usable = False  # deactivated already (an earlier run got that far)
            if account_usable:
                await self._remove_from_rooms(tenant, user.user_id, "removed in the ERP")
                if erase:
                    await self.matrix.set_displayname(user.user_id, "")
                    await self.matrix.set_avatar_url(user.user_id, "")
            redacted = await self._redact_everything_of(tenant, user.user_id) if erase else 0
            if account_usable:
                try:
                    await self.matrix.deactivate(user.user_id, erase)
                except MatrixError as e:
                    if e.status != 403:
                        raise
            await self.db.run(store.set_user_state, erp_user_id, "deleted", erase)
            if erase:
                await self.db.run(store.forget_user_details, erp_user_id)
        logger.info("user %s deleted%s (%d events redacted)", erp_user_id, " and erased" if erase else "", redacted)
        return {"erp_user_id": erp_user_id, "user_id": user.user_id, "state": "deleted",
                "erased": erase, "redacted_events": redacted}

    async def _redact_everything_of(self, tenant: store.Tenant, user_id: str) -> int:
        """Redact, as the tenant's bot, every event `user_id` sent in the tenant's rooms
        that is not redacted yet (messages, reactions, edits, and their member events,
        which carry the display name). Redaction transaction ids derive from the event, so
        a repeat never redacts twice."""
        count = 0
        bot = await self._ensure_bot(tenant.tenant_id)
        for room in await self.db.run(store.tenant_rooms, tenant.tenant_id):
            token = None
            while True:
                page = await self.matrix.messages(room.room_id, bot, limit=100, from_token=token,
                                                  senders=[user_id])
                for ev in page.get("chunk", []):
                    if ev.get("sender") != user_id or ev.get("type") == "m.room.redaction":
                        continue
                    if (ev.get("unsigned") or {}).get("redacted_because"):
                        continue
                    content = ev.get("content") or {}
                    if ev.get("type") == "m.room.member" and set(content) <= {"membership"}:
                        continue  # nothing personal left in it
                    if not content:
                        continue
                    txn = "erase." + hashlib.sha256(ev["event_id"].encode()).hexdigest()[:32]
                    await self.matrix.redact(room.room_id, ev["event_id"], txn, "erased at the ERP's request", bot)
                    count += 1
                token = page.get("end")
                if not page.get("chunk") or not token:
                    break
        return count

    async def login_token(self, tenant_id: str | None, erp_user_id: str) -> dict:
        check_erp_id(erp_user_id, "erp_user_id")
        if tenant_id is not None:
            _, user = await self.user(tenant_id, erp_user_id)
        else:
            user = await self.db.run(store.get_user, erp_user_id)
            if user is None:
                raise not_found(f"unknown user {erp_user_id!r}")
        if not user.active:
            raise forbidden(f"user {erp_user_id!r} is {'deleted' if user.state in ('deleting', 'deleted') else 'deactivated'}")
        result = await self.matrix.get_login_token(user.user_id)
        token = result["login_token"]
        return {
            "login_token": token,
            "expires_in_ms": result.get("expires_in_ms"),
            "user_id": user.user_id,
            "homeserver_url": self.config.homeserver.client_url,
            "login_url": self.login_url(token),
        }

    def login_url(self, token: str) -> str:
        return (f"{self.config.element_url}/{self.config.element_login_page}"
                f"#hs={quote(self.config.homeserver.client_url, safe='')}"
                f"&loginToken={quote(token, safe='')}")

    # ---- business objects --------------------------------------------------------------

    async def put_object(self, tenant_id: str, object_type: str, object_id: str, body: ObjectBody) -> dict:
        check_object_key(object_type, object_id)
        if body.tenant_id not in (None, tenant_id):
            raise invalid("tenant_id in the body names another tenant than the path")
        async with self.lock(("object", tenant_id, object_type, object_id)):
            tenant = await self.tenant(tenant_id, writable=True)
            existing = await self.db.run(store.get_object, tenant_id, object_type, object_id)
            users = await self.db.run(store.get_users, body.participants)
            missing = [p for p in body.participants if p not in users or users[p].tenant_id != tenant_id]
            # Another tenant's user is as unknown here as one that does not exist.
            if missing:
                raise ApiError(404, "M_NOT_FOUND", f"unknown participants: {', '.join(missing)}",
                               unknown_participants=missing)
            state = body.state or (existing.state if existing else "open")
            return await self._apply_object(tenant, object_type, object_id, existing, body.title,
                                            body.fields, body.participants, state, users)

    async def set_object_state(self, tenant_id: str, object_type: str, object_id: str, state: str) -> dict:
        """Close (or reopen) an object: everything else stays as the last PUT made it."""
        async with self.lock(("object", tenant_id, object_type, object_id)):
            tenant, obj = await self.object(tenant_id, object_type, object_id)
            if state == "open" and tenant.state == "removed":
                raise conflict(f"tenant {tenant_id!r} was removed")
            users = await self.db.run(store.get_users, obj.participants)
            return await self._apply_object(tenant, object_type, object_id, obj, obj.title, obj.fields,
                                            obj.participants, state, users)

    async def _apply_object(self, tenant: store.Tenant, object_type: str, object_id: str,
                            existing: store.Object | None, title: str, fields: dict,
                            participants: list[str], state: str, users: dict[str, store.User]) -> dict:
        bot = await self._ensure_bot(tenant.tenant_id)
        object_state = {"object_type": object_type, "object_id": object_id,
                        "tenant_id": tenant.tenant_id, "fields": fields, "state": state}
        name = room_title(title, state)
        if existing is not None:
            room_id, alias = existing.room_id, existing.alias
            await self.move_legacy_alias(room_id)
        else:
            alias_lp = self.ids.object_alias_localpart(tenant.tenant_id, object_type, object_id)
            alias = self.ids.alias(alias_lp)
            room_id = await self._ensure_room(
                alias_lp, bot,
                store.Room("", tenant.tenant_id, "object", object_type, object_id, ""),
                {
                    "name": name,
                    "topic": f"{object_type} {object_id}",
                    "preset": "private_chat",
                    "visibility": "private",
                    "creation_content": {TENANT_KEY: tenant.tenant_id},
                    # Membership follows the ERP: participants cannot invite others.
                    "power_level_content_override": {
                        "invite": 50,
                        "events_default": CLOSED_EVENTS_DEFAULT if state == "closed" else OPEN_EVENTS_DEFAULT},
                    "initial_state": [
                        self._parent_state(tenant.space_id),
                        {"type": OBJECT_STATE, "state_key": "", "content": object_state},
                    ],
                })
        await self._ensure_state(tenant.space_id, "m.space.child", room_id,
                                 {"via": [self.server_name]}, bot)
        await self._ensure_name(room_id, name, bot)
        await self._ensure_state(room_id, OBJECT_STATE, "", object_state, bot)
        await self._ensure_closed(room_id, state == "closed", bot)
        previously = set(existing.participants) if existing else set()
        wanted = {users[p].user_id: p in previously for p in participants if users[p].active}
        await self._sync_members(room_id, bot, wanted, f"removed from {object_type} {object_id} in the ERP")
        await self.db.run(store.upsert_object, store.Object(
            object_type, object_id, tenant.tenant_id, room_id, alias, title, fields, participants, state))
        return {"room_id": room_id, "alias": alias, "state": state}

    @staticmethod
    def _left_by_themselves(member_event: dict | None, user_id: str) -> bool:
        if member_event is None:
            return False
        content = member_event.get("content") or {}
        return content.get("membership") == "leave" and member_event.get("sender") == user_id

    async def _sync_members(self, room_id: str, bot: str, wanted: dict[str, bool], reason: str) -> None:
        """Make the bridge's users in the room exactly `wanted` (user id -> listed by the
        previous PUT too). Someone who left the room by themselves stays out while the ERP
        keeps listing them; listed anew (after a PUT without them) they are invited again.
        Users the bridge did not make (bots, native Matrix users) are left alone."""
        events = await self.matrix.member_events(room_id, bot)
        members = {u: (ev.get("content") or {}).get("membership", "leave") for u, ev in events.items()}
        for user_id, listed_before in sorted(wanted.items()):
            if listed_before and self._left_by_themselves(events.get(user_id), user_id):
                continue
            await self._ensure_member(room_id, user_id, bot, members)
        for user_id, membership in sorted(members.items()):
            if (membership in ("join", "invite", "knock") and self.ids.is_puppet(user_id)
                    and user_id not in wanted):
                await self.matrix.kick(room_id, user_id, reason, bot)

    async def move_legacy_alias(self, room_id: str) -> None:
        """A room of schema 1 still named by its tenant-less alias: give it the new one
        (and make it canonical), then drop the old one."""
        room = await self.db.run(store.get_room, room_id)
        if room is None or not room.legacy_alias:
            return
        bot = await self._ensure_bot(room.tenant_id)
        if await self.matrix.resolve_alias(room.alias, bot) != room_id:
            await self._put_alias(room.alias, room_id, bot)
        canonical = await self.matrix.get_state(room_id, "m.room.canonical_alias", "", bot) or {}
        if canonical.get("alias") != room.alias:
            await self.matrix.put_state(room_id, "m.room.canonical_alias", "", {"alias": room.alias}, bot)
        await self.matrix.delete_alias(room.legacy_alias, bot)
        await self.db.run(store.clear_legacy_alias, room_id)
        logger.info("room %s: alias %s replaced by %s", room_id, room.legacy_alias, room.alias)

    async def move_all_legacy_aliases(self) -> int:
        """Start-up task after the schema migration; returns how many are left to do."""
        left = 0
        for room in await self.db.run(store.rooms_with_legacy_alias):
            try:
                await self.move_legacy_alias(room.room_id)
            except MatrixError as e:
                logger.warning("moving the alias of %s failed (will retry): %s", room.room_id, e)
                left += 1
        return left

    # ---- application-service queries ---------------------------------------------------

    async def known_user(self, user_id: str) -> bool:
        if user_id == self.config.bot_user_id:
            return True
        return await self.db.run(store.user_exists, user_id)

    async def restore_alias(self, alias: str) -> bool:
        """The homeserver asks about an alias of our namespace it does not know: if it is
        one of our rooms (alias lost), put it back."""
        room = await self.db.run(store.get_room_by_alias, alias)
        if room is None:
            return False
        bot = await self._ensure_bot(room.tenant_id)
        await self._put_alias(alias, room.room_id, bot)
        return True

    async def _put_alias(self, alias: str, room_id: str, bot: str) -> None:
        """Point `alias` at the room. The start-up alias move and the homeserver's alias
        queries both put aliases back and can race: an alias made meanwhile is fine if it
        names this room."""
        try:
            await self.matrix.set_alias(alias, room_id, as_user=bot)
        except MatrixError as e:
            if e.status != 409 or await self.matrix.resolve_alias(alias, bot) != room_id:
                raise

