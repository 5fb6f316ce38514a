"""What the ERP posts into an object's room: messages (plain or Markdown) and files.

Each post is keyed by the ERP's `txn_id` per object: the bridge records (object, txn_id)
before sending, so a repeat returns the same event and sends nothing, and a repeat of a
call cut off before the event id was stored first looks through the room's recent
history for the post (it carries the txn_id in its content) before sending again, with a
homeserver transaction id derived from the object and txn_id (so the homeserver's own
dedupe applies too). A file is uploaded once: its mxc URI is recorded before the message
is sent.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import IO

from twisted.internet import threads

from appservice.erp_bridge import store
from appservice.erp_bridge.errors import conflict, forbidden, not_found
from appservice.erp_bridge.models import MessageBody
from appservice.erp_bridge.provisioning import (
    ERP_TXN_KEY, Provisioner, _fault_point, homeserver_txn_id, request_hash)
from appservice.erp_bridge.richtext import markdown_content

logger = logging.getLogger(__name__)
# How far back a retried post looks for a send that may have landed before a crash.
_FIND_SENT_PAGES = 5
_FIND_SENT_PAGE_SIZE = 100


@dataclass
class Upload:
    """A file the ERP posts, spooled to a temporary file by the HTTP layer."""
    file: IO[bytes]
    size: int
    sha256: str
    filename: str
    content_type: str
    sender: str | None
    txn_id: str
    caption: str | None


def image_size(file: IO[bytes]) -> tuple[int, int] | None:
    """Width and height from the image's header only (Pillow opens lazily); None when it
    is no image Pillow knows."""
    from PIL import Image, UnidentifiedImageError

    file.seek(0)
    try:
        with Image.open(file) as img:
            return img.size
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    finally:
        file.seek(0)


class Poster:
    def __init__(self, provisioner: Provisioner) -> None:
        self.p = provisioner
        self.db = provisioner.db
        self.matrix = provisioner.matrix

    async def _sender(self, tenant: store.Tenant, obj: store.Object,
                      sender: str | None) -> tuple[str, str]:
        """(Matrix sender, msgtype of a text post) after checking the sender may post."""
        if tenant.state == "removed":
            raise conflict(f"tenant {tenant.tenant_id!r} was removed")
        if sender is None:
            return tenant.bot_user_id, "m.notice"  # notices are allowed in closed rooms too
        user = await self.db.run(store.get_user, sender)
        if user is None or user.tenant_id != tenant.tenant_id:
            raise not_found(f"unknown sender {sender!r}")
        if not user.active:
            raise forbidden(f"sender {sender!r} is {'deleted' if user.state in ('deleting', 'deleted') else 'deactivated'}")
        if sender not in obj.participants:
            raise forbidden(f"sender {sender!r} is not a participant of {obj.object_type} {obj.object_id!r}")
        if obj.state == "closed":
            raise conflict(f"{obj.object_type} {obj.object_id!r} is closed: only notices (no sender) can be posted")
        return user.user_id, "m.text"

    async def post_message(self, tenant_id: str, object_type: str, object_id: str, body: MessageBody) -> dict:
        tenant, obj = await self.p.object(tenant_id, object_type, object_id)
        sender_id, msgtype = await self._sender(tenant, obj, body.sender)
        text = markdown_content(body.body) if body.format == "markdown" else {"body": body.body}
        content = {"msgtype": msgtype, **text, ERP_TXN_KEY: body.txn_id}
        extra = ("markdown",) if body.format == "markdown" else ()
        return await self._post(tenant, obj, body.txn_id, sender_id,
                                request_hash(body.sender, body.body, *extra), lambda _uri: content)

    async def post_attachment(self, tenant_id: str, object_type: str, object_id: str, up: Upload) -> dict:
        tenant, obj = await self.p.object(tenant_id, object_type, object_id)
        sender_id, _ = await self._sender(tenant, obj, up.sender)
        size = await threads.deferToThread(image_size, up.file) if up.content_type.startswith("image/") else None
        info: dict = {"size": up.size, "mimetype": up.content_type}
        if size:
            info["w"], info["h"] = size

        def content(uri: str) -> dict:
            return {"msgtype": "m.image" if size else "m.file", "body": up.caption or up.filename,
                    "filename": up.filename, "url": uri, "info": info, ERP_TXN_KEY: up.txn_id}

        rhash = request_hash(up.sender, up.caption or "", "file", up.filename, up.content_type, up.sha256)
        return await self._post(tenant, obj, up.txn_id, sender_id, rhash, content, upload=up)

    async def _post(self, tenant: store.Tenant, obj: store.Object, txn_id: str, sender_id: str,
                    rhash: str, content_of, upload: Upload | None = None) -> dict:
        key = (tenant.tenant_id, obj.object_type, obj.object_id)
        wanted = store.ErpMessage(obj.room_id, sender_id, rhash, homeserver_txn_id(*key, txn_id), None)
        async with self.p.lock(("message", *key, txn_id)):
            before = await self.db.run(store.get_erp_message, key, txn_id)
            row = before or await self.db.run(store.claim_erp_message, key, txn_id, wanted)
            if row.request_hash != wanted.request_hash:
                raise conflict(f"txn_id {txn_id!r} was already used for a different message")
            uri = row.content_uri
            if row.event_id:
                return self._answer(row.event_id, row.room_id, uri if upload else None)
            if upload is not None and uri is None:
                uri = await self.matrix.upload(row.sender_user_id, upload.file, upload.content_type,
                                               upload.filename)
                await self.db.run(store.set_erp_message_upload, key, txn_id, uri)
            event_id = None
            if before is not None:
                # An earlier attempt stopped between "row written" and "event id stored":
                # its send may have reached the homeserver. Look before sending again.
                event_id = await self._find_sent(row.room_id, row.sender_user_id, txn_id,
                                                 tenant.bot_user_id)
                logger.info("%s/%s txn %s: retry of an unfinished post; %s", obj.object_type,
                            obj.object_id, txn_id,
                            f"it had landed as {event_id}" if event_id else "sending it now")
            if event_id is None:
                event_id = await self.matrix.send(row.room_id, "m.room.message", row.hs_txn_id,
                                                  content_of(uri), row.sender_user_id)
                _fault_point("after-send", txn_id)
            await self.db.run(store.set_erp_message_event, key, txn_id, event_id)
        return self._answer(event_id, row.room_id, uri if upload else None)

    @staticmethod
    def _answer(event_id: str, room_id: str, content_uri: str | None) -> dict:
        out = {"event_id": event_id, "room_id": room_id}
        if content_uri is not None:
            out["content_uri"] = content_uri
        return out

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


def sha256_of(file: IO[bytes]) -> tuple[str, int]:
    """(hex digest, size) of a file, read from the start; run off the reactor."""
    file.seek(0)
    h, size = hashlib.sha256(), 0
    while chunk := file.read(1 << 20):
        h.update(chunk)
        size += len(chunk)
    file.seek(0)
    return h.hexdigest(), size
