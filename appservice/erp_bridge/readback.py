"""Reading back what the bridge holds: tenants, users, objects (as their rooms hold them
now, read from the homeserver), paginated lists, message history and the summary an ERP
shows beside an object."""
from __future__ import annotations

import base64
import json
import logging

from appservice.erp_bridge import store
from appservice.erp_bridge.errors import invalid
from appservice.erp_bridge.matrix import MatrixError
from appservice.erp_bridge.media_links import MediaLinks
from appservice.erp_bridge.provisioning import ERP_TXN_KEY, OBJECT_STATE, Provisioner
from appservice.erp_bridge.webhook import message_fields, relates_to, thread_root

logger = logging.getLogger(__name__)
INDEX_PAGE = 100


def encode_cursor(key: list[str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def decode_cursor(token: str | None, parts: int) -> list[str] | None:
    if not token:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, UnicodeDecodeError):
        raise invalid("from is not a valid pagination token") from None
    if not isinstance(key, list) or len(key) != parts or not all(isinstance(k, str) for k in key):
        raise invalid("from is not a valid pagination token")
    return key


def object_json(obj: store.Object) -> dict:
    return {"tenant_id": obj.tenant_id, "object_type": obj.object_type, "object_id": obj.object_id,
            "room_id": obj.room_id, "alias": obj.alias, "title": obj.title, "state": obj.state,
            "participants": obj.participants}


def user_json(user: store.User) -> dict:
    return {"erp_user_id": user.erp_user_id, "user_id": user.user_id, "tenant_id": user.tenant_id,
            "display_name": user.display_name or None, "email": user.email, "active": user.active,
            "state": user.state, "erased": user.erase and user.state == "deleted"}


class Reader:
    def __init__(self, provisioner: Provisioner, links: MediaLinks) -> None:
        self.p = provisioner
        self.db = provisioner.db
        self.matrix = provisioner.matrix
        self.links = links

    async def tenant(self, tenant_id: str) -> dict:
        tenant = await self.p.tenant(tenant_id)
        counts = await self.db.run(store.tenant_counts, tenant_id)
        name = await self.matrix.get_state(tenant.space_id, "m.room.name", "", tenant.bot_user_id)
        return {"tenant_id": tenant.tenant_id, "name": tenant.name, "state": tenant.state,
                "space_id": tenant.space_id, "general_room_id": tenant.general_room_id,
                "bot_user_id": tenant.bot_user_id, "space_name": (name or {}).get("name"),
                "users": counts["users"], "objects": counts["objects"]}

    async def user(self, tenant_id: str, erp_user_id: str) -> dict:
        _, user = await self.p.user(tenant_id, erp_user_id)
        out = user_json(user)
        # The profile as the homeserver has it now (a deactivated account has none).
        out["matrix_display_name"] = (await self.matrix.get_displayname(user.user_id)
                                      if user.state not in ("deleting", "deleted") else None)
        return out

    async def list_users(self, tenant_id: str, limit: int, from_token: str | None) -> dict:
        await self.p.tenant(tenant_id)
        after = decode_cursor(from_token, 1)
        rows = await self.db.run(store.list_users, tenant_id, after[0] if after else None, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return {"chunk": [user_json(u) for u in rows],
                "next_from": encode_cursor([rows[-1].erp_user_id]) if more else None}

    async def list_objects(self, tenant_id: str, object_type: str | None, limit: int,
                           from_token: str | None) -> dict:
        await self.p.tenant(tenant_id)
        after = decode_cursor(from_token, 2)
        rows = await self.db.run(store.list_objects, tenant_id, object_type,
                                 tuple(after) if after else None, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        return {"chunk": [object_json(o) for o in rows],
                "next_from": encode_cursor([rows[-1].object_type, rows[-1].object_id]) if more else None}

    async def object(self, tenant_id: str, object_type: str, object_id: str) -> dict:
        """The object as its room holds it now: name, fields, open/closed, members."""
        tenant, obj = await self.p.object(tenant_id, object_type, object_id)
        bot = tenant.bot_user_id
        name = await self.matrix.get_state(obj.room_id, "m.room.name", "", bot) or {}
        state = await self.matrix.get_state(obj.room_id, OBJECT_STATE, "", bot) or {}
        levels = await self.matrix.get_state(obj.room_id, "m.room.power_levels", "", bot) or {}
        events = await self.matrix.member_events(obj.room_id, bot)
        erp_ids = await self.db.run(store.erp_ids_of, sorted(events))
        users = await self.db.run(store.get_users, obj.participants)
        participants = []
        for erp_id in obj.participants:
            user = users.get(erp_id)
            ev = events.get(user.user_id) if user else None
            participants.append({
                "erp_user_id": erp_id, "user_id": user.user_id if user else None,
                "user_state": user.state if user else None,
                "membership": ((ev or {}).get("content") or {}).get("membership"),
                "left_by_themselves": bool(user and self.p._left_by_themselves(ev, user.user_id)),
            })
        members = [{"user_id": uid, "erp_user_id": erp_ids.get(uid),
                    "membership": (ev.get("content") or {}).get("membership")}
                   for uid, ev in sorted(events.items())
                   if (ev.get("content") or {}).get("membership") in ("join", "invite")]
        return {**object_json(obj),
                "room_name": name.get("name"),
                "fields": state.get("fields", obj.fields),
                "room_state": "closed" if levels.get("events_default", 0) > 0 else "open",
                "participants": participants,
                "members": members}

    async def messages(self, tenant_id: str, object_type: str, object_id: str, limit: int,
                       from_token: str | None) -> dict:
        tenant, obj = await self.p.object(tenant_id, object_type, object_id)
        return await self._history(tenant, obj.room_id, limit, from_token)

    async def _history(self, tenant: store.Tenant, room_id: str, limit: int,
                       from_token: str | None) -> dict:
        """m.room.message newest first; edits are shown applied to their message (not as
        messages of their own); redacted messages are left out."""
        try:
            page = await self.matrix.messages(room_id, tenant.bot_user_id, limit=limit,
                                              from_token=from_token, types=["m.room.message"])
        except MatrixError as e:
            if e.status == 400 and from_token:
                raise invalid("from is not a valid pagination token") from None
            raise
        events = [ev for ev in page.get("chunk", [])
                  if ev.get("type") == "m.room.message" and "state_key" not in ev
                  and (ev.get("content") or {}).get("body") is not None
                  and relates_to(ev.get("content") or {}).get("rel_type") != "m.replace"]
        senders = await self.db.run(store.erp_ids_of, sorted({ev["sender"] for ev in events}))
        chunk = []
        for ev in events:
            content = ev.get("content") or {}
            edit = ((ev.get("unsigned") or {}).get("m.relations") or {}).get("m.replace")
            shown = content
            if isinstance(edit, dict) and isinstance((edit.get("content") or {}).get("m.new_content"), dict):
                shown = {**edit["content"]["m.new_content"], "m.relates_to": content.get("m.relates_to")}
            fields = message_fields(shown, tenant.tenant_id, self.links)
            fields.pop("content")
            chunk.append({
                "event_id": ev["event_id"],
                "sender": senders.get(ev["sender"]),
                "sender_user_id": ev["sender"],
                **fields,
                "edited": shown is not content,
                "origin_server_ts": ev.get("origin_server_ts"),
                "erp_txn_id": content.get(ERP_TXN_KEY) if isinstance(content.get(ERP_TXN_KEY), str) else None,
            })
        more = bool(page.get("chunk")) and page.get("end")
        return {"chunk": chunk, "next_from": page.get("end") if more else None}

    async def summary(self, tenant_id: str, object_type: str, object_id: str, last: int) -> dict:
        tenant, obj = await self.p.object(tenant_id, object_type, object_id)
        bot = tenant.bot_user_id
        await self._ensure_indexed(tenant, obj.room_id)
        stats = await self.db.run(store.room_stats, obj.room_id)
        events = await self.matrix.member_events(obj.room_id, bot)
        joined = [u for u, ev in events.items()
                  if (ev.get("content") or {}).get("membership") == "join" and u != bot]
        threads = await self.matrix.threads(obj.room_id, bot, limit=50)
        open_threads = []
        for root in threads.get("chunk", []):
            summary = ((root.get("unsigned") or {}).get("m.relations") or {}).get("m.thread") or {}
            latest = summary.get("latest_event") or {}
            open_threads.append({"root_event_id": root.get("event_id"),
                                 "body": (root.get("content") or {}).get("body"),
                                 "reply_count": summary.get("count", 0),
                                 "last_reply_ts": latest.get("origin_server_ts")})
        latest: list[dict] = []
        token = None
        for _ in range(10):  # redacted messages and edits do not count: look further back
            if len(latest) >= last:
                break
            page = await self._history(tenant, obj.room_id, max(last, 10), token)
            latest += page["chunk"]
            token = page["next_from"]
            if not token:
                break
        return {"tenant_id": tenant_id, "object_type": object_type, "object_id": object_id,
                "state": obj.state, "title": obj.title,
                "participant_count": len(joined),
                "message_count": stats["message_count"],
                "last_activity_ts": stats["last_activity_ts"],
                "open_threads": open_threads,
                "last_messages": latest[:last]}

    async def _ensure_indexed(self, tenant: store.Tenant, room_id: str) -> None:
        """Rooms made before the event index (schema 2) are indexed from history once."""
        room = await self.db.run(store.get_room, room_id)
        if room is None or room.indexed:
            return
        async with self.p.lock(("index", room_id)):
            room = await self.db.run(store.get_room, room_id)
            if room is None or room.indexed:
                return
            token = None
            while True:
                page = await self.matrix.messages(room_id, tenant.bot_user_id, limit=INDEX_PAGE,
                                                  from_token=token, types=["m.room.message", "m.reaction"])
                await self.db.run(_index_page, room_id, page.get("chunk", []))
                token = page.get("end")
                if not page.get("chunk") or not token:
                    break
            await self.db.run(store.set_room_indexed, room_id)


def _index_page(cur, room_id: str, events: list[dict]) -> None:
    for ev in events:
        content = ev.get("content") or {}
        if not content or "state_key" in ev:
            continue
        rel = relates_to(content)
        ts = ev.get("origin_server_ts") or 0
        if ev.get("type") == "m.room.message" and rel.get("rel_type") != "m.replace":
            store.index_event(cur, ev["event_id"], room_id, "message", ev.get("sender", ""), ts,
                              thread_root=thread_root(content))
        elif ev.get("type") == "m.reaction" and rel.get("rel_type") == "m.annotation":
            store.index_event(cur, ev["event_id"], room_id, "reaction", ev.get("sender", ""), ts,
                              target=rel.get("event_id"), key=rel.get("key"))
