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
from appservice.erp_bridge.models import MessageBody, ObjectBody, TenantBody, UserBody

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


def request_hash(sender: str | None, body: str) -> str:
    return hashlib.sha256(json.dumps([sender, body]).encode()).hexdigest()


def homeserver_txn_id(object_type: str, object_id: str, txn_id: str) -> str:
    digest = hashlib.sha256(f"{object_type}\0{object_id}\0{txn_id}".encode()).hexdigest()
    return f"erp.{digest[:40]}"


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
        self._lock = KeyedLock()
        self._bots_ready: set[str] = set()

    # ---- tenants -----------------------------------------------------------------------

    async def put_tenant(self, tenant_id: str, body: TenantBody) -> dict:
        check_erp_id(tenant_id, "tenant_id")
        async with self._lock(("tenant", tenant_id)):
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

    async def put_user(self, erp_user_id: str, body: UserBody) -> dict:
        check_erp_id(erp_user_id, "erp_user_id")
        async with self._lock(("user", erp_user_id)):
            tenant = await self.db.run(store.get_tenant, body.tenant_id)
            if tenant is None:
                raise not_found(f"unknown tenant {body.tenant_id!r}: PUT /_erp/v1/tenants/{{tenant_id}} first")
            existing = await self.db.run(store.get_user, erp_user_id)
            if existing and existing.tenant_id != body.tenant_id:
                raise conflict(f"user {erp_user_id!r} belongs to tenant {existing.tenant_id!r}; "
                               "a user cannot move to another tenant")
            user_id = self.ids.user(erp_user_id)
            await self.matrix.register(self.ids.user_localpart(erp_user_id))
            # Tenant first: the homeserver only lets tenant users into the tenant's rooms.
            await self.matrix.set_tenant(user_id, body.tenant_id)
            if await self.matrix.get_displayname(user_id) != body.display_name:
                await self.matrix.set_displayname(user_id, body.display_name)
            if body.active:
                await self._ensure_bot(tenant.tenant_id)
                for room_id in (tenant.space_id, tenant.general_room_id):
                    await self._ensure_member(room_id, user_id, tenant.bot_user_id)
                if existing is not None and not existing.active:
                    # Reactivated: back into the objects that still list them.
                    for obj in await self.db.run(store.objects_with_participant, erp_user_id):
                        await self._ensure_member(obj.room_id, user_id, tenant.bot_user_id)
            else:
                await self._deactivate(user_id)
            await self.db.run(store.upsert_user, store.User(
                erp_user_id, user_id, body.tenant_id, body.display_name, body.email, body.active))
        return {"user_id": user_id}

    async def _deactivate(self, user_id: str) -> None:
        """Log the user out of every device and take them out of every room (their
        messages stay in the rooms' history)."""
        await self.matrix.logout_all(user_id)
        for room_id in await self.matrix.joined_rooms(user_id):
            try:
                await self.matrix.leave(room_id, user_id)
            except MatrixError as e:
                if e.status != 403:  # not in the room any more: nothing to do
                    raise

    async def login_token(self, erp_user_id: str) -> dict:
        check_erp_id(erp_user_id, "erp_user_id")
        user = await self.db.run(store.get_user, erp_user_id)
        if user is None:
            raise not_found(f"unknown user {erp_user_id!r}")
        if not user.active:
            raise forbidden(f"user {erp_user_id!r} is deactivated")
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

    async def put_object(self, object_type: str, object_id: str, body: ObjectBody) -> dict:
        check_object_key(object_type, object_id)
        async with self._lock(("object", object_type, object_id)):
            tenant = await self.db.run(store.get_tenant, body.tenant_id)
            if tenant is None:
                raise not_found(f"unknown tenant {body.tenant_id!r}")
            existing = await self.db.run(store.get_object, object_type, object_id)
            if existing and existing.tenant_id != body.tenant_id:
                raise conflict(f"{object_type} {object_id!r} belongs to tenant {existing.tenant_id!r}")
            users = await self.db.run(store.get_users, body.participants)
            missing = [p for p in body.participants if p not in users]
            if missing:
                raise ApiError(404, "M_NOT_FOUND", f"unknown participants: {', '.join(missing)}",
                               unknown_participants=missing)
            foreign = [p for p in body.participants if users[p].tenant_id != body.tenant_id]
            if foreign:
                raise ApiError(403, "M_FORBIDDEN",
                               f"participants of another tenant: {', '.join(foreign)}",
                               foreign_participants=foreign)

            bot = await self._ensure_bot(tenant.tenant_id)
            alias_lp = self.ids.object_alias_localpart(object_type, object_id)
            object_state = {"object_type": object_type, "object_id": object_id,
                            "tenant_id": tenant.tenant_id, "fields": body.fields}
            room_id = await self._ensure_room(
                alias_lp, bot,
                store.Room("", tenant.tenant_id, "object", object_type, object_id, ""),
                {
                    "name": body.title,
                    "topic": f"{object_type} {object_id}",
                    "preset": "private_chat",
                    "visibility": "private",
                    "creation_content": {TENANT_KEY: tenant.tenant_id},
                    # Membership follows the ERP: participants cannot invite others.
                    "power_level_content_override": {"invite": 50},
                    "initial_state": [
                        self._parent_state(tenant.space_id),
                        {"type": OBJECT_STATE, "state_key": "", "content": object_state},
                    ],
                })
            await self._ensure_state(tenant.space_id, "m.space.child", room_id,
                                     {"via": [self.server_name]}, bot)
            await self._ensure_name(room_id, body.title, bot)
            await self._ensure_state(room_id, OBJECT_STATE, "", object_state, bot)
            wanted = {users[p].user_id for p in body.participants if users[p].active}
            await self._sync_members(room_id, bot, wanted, f"removed from {object_type} {object_id} in the ERP")
            alias = self.ids.alias(alias_lp)
            await self.db.run(store.upsert_object, store.Object(
                object_type, object_id, tenant.tenant_id, room_id, alias, body.title,
                body.fields, body.participants))
        return {"room_id": room_id, "alias": alias}

    async def _sync_members(self, room_id: str, bot: str, wanted: set[str], reason: str) -> None:
        """Make the bridge's users in the room exactly `wanted`. Users the bridge did not
        make (bots, native Matrix users of the tenant) are left alone."""
        members = await self.matrix.members(room_id, bot)
        for user_id in sorted(wanted):
            await self._ensure_member(room_id, user_id, bot, members)
        for user_id, membership in sorted(members.items()):
            if (membership in ("join", "invite", "knock") and self.ids.is_puppet(user_id)
                    and user_id not in wanted):
                await self.matrix.kick(room_id, user_id, reason, bot)

    # ---- messages ----------------------------------------------------------------------

    async def post_message(self, object_type: str, object_id: str, body: MessageBody) -> dict:
        check_object_key(object_type, object_id)
        obj = await self.db.run(store.get_object, object_type, object_id)
        if obj is None:
            raise not_found(f"unknown {object_type} {object_id!r}")
        tenant = await self.db.run(store.get_tenant, obj.tenant_id)
        assert tenant is not None
        if body.sender is not None:
            user = await self.db.run(store.get_user, body.sender)
            if user is None:
                raise not_found(f"unknown sender {body.sender!r}")
            if user.tenant_id != obj.tenant_id:
                raise forbidden(f"sender {body.sender!r} belongs to another tenant")
            if not user.active:
                raise forbidden(f"sender {body.sender!r} is deactivated")
            if body.sender not in obj.participants:
                raise forbidden(f"sender {body.sender!r} is not a participant of {object_type} {object_id!r}")
            sender_id, msgtype = user.user_id, "m.text"
        else:
            sender_id, msgtype = tenant.bot_user_id, "m.notice"
        content = {"msgtype": msgtype, "body": body.body, ERP_TXN_KEY: body.txn_id}
        wanted = store.ErpMessage(obj.room_id, sender_id, request_hash(body.sender, body.body),
                                  homeserver_txn_id(object_type, object_id, body.txn_id), None)
        async with self._lock(("message", object_type, object_id, body.txn_id)):
            before = await self.db.run(store.get_erp_message, object_type, object_id, body.txn_id)
            row = before or await self.db.run(store.claim_erp_message, object_type, object_id,
                                              body.txn_id, wanted)
            if row.request_hash != wanted.request_hash:
                raise conflict(f"txn_id {body.txn_id!r} was already used for a different message")
            if row.event_id:
                return {"event_id": row.event_id, "room_id": row.room_id}
            event_id = None
            if before is not None:
                # An earlier attempt stopped between "row written" and "event id stored":
                # its send may have reached the homeserver. Look before sending again.
                event_id = await self._find_sent(row.room_id, row.sender_user_id, body.txn_id,
                                                 tenant.bot_user_id)
                logger.info("message %s/%s txn %s: retry of an unfinished post; %s",
                            object_type, object_id, body.txn_id,
                            f"it had landed as {event_id}" if event_id else "sending it now")
            if event_id is None:
                event_id = await self.matrix.send(row.room_id, "m.room.message", row.hs_txn_id,
                                                  content, row.sender_user_id)
                _fault_point("after-send", body.txn_id)
            await self.db.run(store.set_erp_message_event, object_type, object_id, body.txn_id, event_id)
        return {"event_id": event_id, "room_id": row.room_id}

    async def _find_sent(self, room_id: str, sender: str, txn_id: str, reader: str) -> str | None:
        token = None
        for _ in range(_FIND_SENT_PAGES):
            page = await self.matrix.messages(room_id, reader, limit=_FIND_SENT_PAGE_SIZE,
                                              from_token=token, types=["m.room.message"])
            for ev in page.get("chunk", []):
                if (ev.get("sender") == sender and ev.get("type") == "m.room.message"
                        and (ev.get("content") or {}).get(ERP_TXN_KEY) == txn_id):
                    return ev["event_id"]
            token = page.get("end")
            if not page.get("chunk") or not token:
                return None
        return None

    async def get_messages(self, object_type: str, object_id: str, limit: int,
                           from_token: str | None) -> dict:
        check_object_key(object_type, object_id)
        obj = await self.db.run(store.get_object, object_type, object_id)
        if obj is None:
            raise not_found(f"unknown {object_type} {object_id!r}")
        tenant = await self.db.run(store.get_tenant, obj.tenant_id)
        assert tenant is not None
        try:
            page = await self.matrix.messages(obj.room_id, tenant.bot_user_id, limit=limit,
                                              from_token=from_token, types=["m.room.message"])
        except MatrixError as e:
            if e.status == 400 and from_token:
                raise invalid("from is not a valid pagination token") from None
            raise
        events = [ev for ev in page.get("chunk", [])
                  if ev.get("type") == "m.room.message" and "state_key" not in ev
                  and (ev.get("content") or {}).get("body") is not None]
        senders = await self.db.run(store.erp_ids_of, sorted({ev["sender"] for ev in events}))
        chunk = []
        for ev in events:
            content = ev.get("content") or {}
            chunk.append({
                "event_id": ev["event_id"],
                "sender": senders.get(ev["sender"]),
                "sender_user_id": ev["sender"],
                "msgtype": content.get("msgtype"),
                "body": content.get("body"),
                "origin_server_ts": ev.get("origin_server_ts"),
                "erp_txn_id": content.get(ERP_TXN_KEY) if isinstance(content.get(ERP_TXN_KEY), str) else None,
            })
        more = bool(page.get("chunk")) and page.get("end")
        return {"chunk": chunk, "next_from": page.get("end") if more else None}

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
        await self.matrix.set_alias(alias, room.room_id, as_user=bot)
        return True

