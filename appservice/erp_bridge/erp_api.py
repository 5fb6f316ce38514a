"""The ERP-facing REST API (/_erp/v1), JSON in and out, `Authorization: Bearer <erp.api_token>`.
Handlers check the token and the body, then hand over to the Provisioner (tenants, users,
objects, lifecycle), the Poster (messages, files) or the Reader (everything read back).

Everything a tenant owns lives under /_erp/v1/tenants/{tenant_id}/...: an object, a user
or a message of another tenant answers exactly like a missing one (404). File download
links (/_erp/v1/media/...) carry their own signature instead of the bearer token."""
from __future__ import annotations

import email.parser
import email.policy
import logging
import re
import tempfile

from twisted.internet import threads
from twisted.web.iweb import IRequest

from appservice.erp_bridge.config import BridgeConfig
from appservice.erp_bridge.errors import ApiError, invalid
from appservice.erp_bridge.ids import is_object_type
from appservice.erp_bridge.http import Router, check_token, parse_body, query_arg, read_optional_json
from appservice.erp_bridge.matrix import MatrixError
from appservice.erp_bridge.media_proxy import MediaProxy
from appservice.erp_bridge.models import (
    DeleteUserBody, MessageBody, ObjectBody, RemoveTenantBody, TenantBody, UserBody, check_txn_id)
from appservice.erp_bridge.posting import Poster, Upload, sha256_of
from appservice.erp_bridge.provisioning import Provisioner, check_erp_id
from appservice.erp_bridge.readback import Reader

logger = logging.getLogger(__name__)
PREFIX = "/_erp/v1"
T = PREFIX + "/tenants/{tenant_id}"
OBJ = T + "/objects/{object_type}/{object_id}"
MEDIA_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]{1,127}/[A-Za-z0-9!#$&^_.+-]{1,127}")


def homeserver_failure(e: MatrixError) -> ApiError:
    """The homeserver failed a step: nothing the ERP did wrong, and repeating the call is
    safe (it resumes where this one stopped)."""
    if e.status == 0:
        return ApiError(503, "IO.ERPCHAT.HOMESERVER_UNAVAILABLE",
                        f"the homeserver cannot be reached; retry later ({e.error})")
    return ApiError(502, "IO.ERPCHAT.HOMESERVER_ERROR",
                    f"the homeserver refused a step ({e.status} {e.errcode}: {e.error}); retry later",
                    homeserver_status=e.status, homeserver_errcode=e.errcode)


def int_arg(request: IRequest, name: str, default: int, low: int, high: int) -> int:
    raw = query_arg(request, name)
    try:
        value = int(raw) if raw is not None else default
    except ValueError:
        raise invalid(f"{name} must be an integer") from None
    if not low <= value <= high:
        raise invalid(f"{name} must be between {low} and {high}")
    return value


def bool_arg(request: IRequest, name: str) -> bool | None:
    raw = query_arg(request, name)
    if raw is None:
        return None
    if raw not in ("true", "false"):
        raise invalid(f"{name} must be true or false")
    return raw == "true"


def json_object_or_nothing(request: IRequest) -> dict:
    data = read_optional_json(request)
    if not isinstance(data, dict):
        raise ApiError(400, "M_BAD_JSON", "request body must be a JSON object")
    return data


def optional_body(request: IRequest, model):
    return parse_body(request, model) if json_object_or_nothing(request) else model()


def clean_filename(name: str | None) -> str:
    name = (name or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not name or len(name) > 255 or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise invalid("filename must be 1-255 characters without control characters")
    return name


def parse_multipart(content_type: str, file) -> dict:
    """The parts of a multipart/form-data body: {name: (filename, content type, bytes)}.
    Runs off the reactor (the standard library's MIME parser)."""
    file.seek(0)
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + file.read())
    if not msg.is_multipart():
        raise invalid("not a multipart/form-data body")
    parts = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        parts[name] = (part.get_filename(), part.get_content_type(), part.get_payload(decode=True) or b"")
    return parts


class ErpApi:
    def __init__(self, config: BridgeConfig, provisioner: Provisioner, poster: Poster,
                 reader: Reader, media: MediaProxy) -> None:
        assert config.erp.api_token
        self.api_token = config.erp.api_token
        self.p = provisioner
        self.poster = poster
        self.reader = reader
        self.media = media

    def register(self, router: Router) -> None:
        w = self._wrap
        router.add("PUT", T, w(self.put_tenant))
        router.add("GET", T, w(self.get_tenant))
        router.add("DELETE", T, w(self.remove_tenant))
        router.add("GET", T + "/users", w(self.list_users))
        router.add("PUT", T + "/users/{erp_user_id}", w(self.put_tenant_user))
        router.add("GET", T + "/users/{erp_user_id}", w(self.get_user))
        router.add("DELETE", T + "/users/{erp_user_id}", w(self.delete_user))
        router.add("POST", T + "/users/{erp_user_id}/login-token", w(self.tenant_login_token))
        router.add("GET", T + "/objects", w(self.list_objects))
        router.add("PUT", OBJ, w(self.put_object))
        router.add("GET", OBJ, w(self.get_object))
        router.add("DELETE", OBJ, w(self.close_object))
        router.add("POST", OBJ + "/messages", w(self.post_message))
        router.add("GET", OBJ + "/messages", w(self.get_messages))
        router.add("POST", OBJ + "/attachments", w(self.post_attachment))
        router.add("GET", OBJ + "/summary", w(self.summary))
        # Users are unique across tenants, so their tenant-less routes stay.
        router.add("PUT", PREFIX + "/users/{erp_user_id}", w(self.put_user))
        router.add("POST", PREFIX + "/users/{erp_user_id}/login-token", w(self.login_token))
        # Objects are not: the tenant-less object routes of API version 1 are gone.
        for method, path in (("PUT", "/objects/{object_type}/{object_id}"),
                             ("POST", "/objects/{object_type}/{object_id}/messages"),
                             ("GET", "/objects/{object_type}/{object_id}/messages")):
            router.add(method, PREFIX + path, w(self.moved))
        router.add("GET", PREFIX + "/media/{tenant_id}/{server_name}/{media_id}", self.media.download)

    def _wrap(self, handler):
        async def run(request: IRequest, **params):
            check_token(request, self.api_token)
            try:
                return await handler(request, **params)
            except MatrixError as e:
                logger.warning("%s %s: homeserver step failed: %s",
                               request.method.decode(), request.path.decode(), e)
                raise homeserver_failure(e) from None
        return run

    async def moved(self, request: IRequest, **_params):
        raise ApiError(404, "M_UNRECOGNIZED", "objects are per tenant now: use "
                       "/_erp/v1/tenants/{tenant_id}/objects/{object_type}/{object_id}")

    # ---- tenants -----------------------------------------------------------------------

    async def put_tenant(self, request: IRequest, tenant_id: str):
        return 200, await self.p.put_tenant(tenant_id, parse_body(request, TenantBody))

    async def get_tenant(self, request: IRequest, tenant_id: str):
        return 200, await self.reader.tenant(tenant_id)

    async def remove_tenant(self, request: IRequest, tenant_id: str):
        body = optional_body(request, RemoveTenantBody)
        return 200, await self.p.remove_tenant(tenant_id, body.erase_users)

    # ---- users -------------------------------------------------------------------------

    async def put_user(self, request: IRequest, erp_user_id: str):
        return 200, await self.p.put_user(None, erp_user_id, parse_body(request, UserBody))

    async def put_tenant_user(self, request: IRequest, tenant_id: str, erp_user_id: str):
        check_erp_id(tenant_id, "tenant_id")
        return 200, await self.p.put_user(tenant_id, erp_user_id, parse_body(request, UserBody))

    async def get_user(self, request: IRequest, tenant_id: str, erp_user_id: str):
        return 200, await self.reader.user(tenant_id, erp_user_id)

    async def list_users(self, request: IRequest, tenant_id: str):
        limit = int_arg(request, "limit", 50, 1, 500)
        return 200, await self.reader.list_users(tenant_id, limit, query_arg(request, "from"))

    async def delete_user(self, request: IRequest, tenant_id: str, erp_user_id: str):
        body = optional_body(request, DeleteUserBody)
        erase = bool_arg(request, "erase")
        return 200, await self.p.delete_user(tenant_id, erp_user_id, body.erase or bool(erase))

    async def login_token(self, request: IRequest, erp_user_id: str):
        json_object_or_nothing(request)
        return 200, await self.p.login_token(None, erp_user_id)

    async def tenant_login_token(self, request: IRequest, tenant_id: str, erp_user_id: str):
        json_object_or_nothing(request)
        return 200, await self.p.login_token(tenant_id, erp_user_id)

    # ---- objects -----------------------------------------------------------------------

    async def list_objects(self, request: IRequest, tenant_id: str):
        limit = int_arg(request, "limit", 50, 1, 500)
        object_type = query_arg(request, "type")
        if object_type is not None and not is_object_type(object_type):
            raise invalid("type must be 1-32 characters of a-z 0-9 - starting with a letter")
        return 200, await self.reader.list_objects(tenant_id, object_type, limit, query_arg(request, "from"))

    async def put_object(self, request: IRequest, tenant_id: str, object_type: str, object_id: str):
        body = parse_body(request, ObjectBody)
        return 200, await self.p.put_object(tenant_id, object_type, object_id, body)

    async def get_object(self, request: IRequest, tenant_id: str, object_type: str, object_id: str):
        return 200, await self.reader.object(tenant_id, object_type, object_id)

    async def close_object(self, request: IRequest, tenant_id: str, object_type: str, object_id: str):
        return 200, await self.p.set_object_state(tenant_id, object_type, object_id, "closed")

    async def summary(self, request: IRequest, tenant_id: str, object_type: str, object_id: str):
        last = int_arg(request, "last", 5, 0, 50)
        return 200, await self.reader.summary(tenant_id, object_type, object_id, last)

    # ---- messages and files ------------------------------------------------------------

    async def post_message(self, request: IRequest, tenant_id: str, object_type: str, object_id: str):
        body = parse_body(request, MessageBody)
        return 200, await self.poster.post_message(tenant_id, object_type, object_id, body)

    async def get_messages(self, request: IRequest, tenant_id: str, object_type: str, object_id: str):
        limit = int_arg(request, "limit", 20, 1, 100)
        from_token = query_arg(request, "from") or None
        return 200, await self.reader.messages(tenant_id, object_type, object_id, limit, from_token)

    async def post_attachment(self, request: IRequest, tenant_id: str, object_type: str, object_id: str):
        """A file: the raw body (Content-Type, ?filename=&txn_id=&sender=&caption=), or
        multipart/form-data with a `file` part and the same names as text parts."""
        await self.p.object(tenant_id, object_type, object_id)  # 404 before any work
        header = (request.getHeader(b"content-type") or b"application/octet-stream").decode("latin-1")
        fields = {k: query_arg(request, k) for k in ("filename", "txn_id", "sender", "caption")}
        if header.lower().startswith("multipart/form-data"):
            parts = await threads.deferToThread(parse_multipart, header, request.content)
            if "file" not in parts:
                raise ApiError(400, "M_BAD_JSON", "the multipart body needs a `file` part")
            filename, content_type, data = parts.pop("file")
            for name, (_fn, _ct, value) in parts.items():
                if name in fields:
                    fields[name] = value.decode("utf-8", "replace")
            fields["filename"] = fields["filename"] or filename
            file = tempfile.TemporaryFile()
            file.write(data)
        else:
            content_type, file = header.split(";")[0].strip(), request.content
        if not MEDIA_TYPE.fullmatch(content_type):
            raise invalid("the file's content type must look like type/subtype")
        try:
            txn_id = check_txn_id(fields["txn_id"] or "")
        except ValueError as e:
            raise invalid(str(e)) from None
        sender = fields["sender"] or None
        if sender is not None:
            check_erp_id(sender, "sender")
        caption = fields["caption"] or None
        if caption is not None and len(caption) > 32_768:
            raise invalid("caption must be at most 32768 characters")
        digest, size = await threads.deferToThread(sha256_of, file)
        if size == 0:
            raise invalid("the file is empty")
        upload = Upload(file, size, digest, clean_filename(fields["filename"]), content_type.lower(),
                        sender, txn_id, caption)
        return 200, await self.poster.post_attachment(tenant_id, object_type, object_id, upload)

