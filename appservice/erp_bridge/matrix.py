"""A small client for the Matrix client-server API as an application service: every
request carries the as_token, and `as_user` masquerades as a user of the namespace
(`?user_id=`), as the application-service spec defines. Nothing here knows the ERP."""
from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import quote, urlencode

import treq
from twisted.internet import defer, reactor
from twisted.web.client import FileBodyProducer, HTTPConnectionPool

logger = logging.getLogger(__name__)


class MatrixError(Exception):
    """The homeserver answered with an error (status >= 400), or could not be reached
    (status 0)."""

    def __init__(self, status: int, errcode: str, error: str, body: Any = None) -> None:
        super().__init__(f"{status} {errcode}: {error}")
        self.status = status
        self.errcode = errcode
        self.error = error
        self.body = body


def q(part: str) -> str:
    """Quote one path segment (room ids, aliases, user ids, event types)."""
    return quote(part, safe="")


class MatrixClient:
    def __init__(self, base_url: str, as_token: str, *, timeout_s: float = 30.0,
                 max_rate_limit_retries: int = 5) -> None:
        self.base_url = base_url.rstrip("/")
        self.as_token = as_token
        self.timeout_s = timeout_s
        self.max_rate_limit_retries = max_rate_limit_retries
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        self._pool.maxPersistentPerHost = 20

    async def close(self) -> None:
        await self._pool.closeCachedConnections()

    def _url(self, path: str, as_user: str | None, query: dict[str, Any] | None) -> str:
        params = dict(query or {})
        if as_user:
            params["user_id"] = as_user
        url = self.base_url + path
        if params:
            url += "?" + urlencode(params)
        return url

    async def request(self, method: str, path: str, body: Any = None, *,
                      as_user: str | None = None, query: dict[str, Any] | None = None,
                      raw_body: Any = None, content_type: str | None = None) -> Any:
        """JSON in (or `raw_body`, a file object rewound before each attempt), JSON out."""
        url = self._url(path, as_user, query)
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": [f"Bearer {self.as_token}"]}
        if data is not None:
            headers["Content-Type"] = ["application/json"]
        if raw_body is not None:
            headers["Content-Type"] = [content_type or "application/octet-stream"]
        for attempt in range(self.max_rate_limit_retries + 1):
            try:
                if raw_body is not None:
                    raw_body.seek(0)
                    data = FileBodyProducer(raw_body)
                resp = await treq.request(method, url, data=data,
                                          headers=headers, pool=self._pool, timeout=self.timeout_s)
                raw = await treq.content(resp)
            except Exception as e:  # connection refused, timeout, reset...
                raise MatrixError(0, "M_CONNECTION_FAILED",
                                  f"{method} {path}: homeserver unreachable ({e.__class__.__name__})") from e
            try:
                payload = json.loads(raw) if raw else {}
            except ValueError:
                payload = None
            if resp.code < 400:
                return payload
            errcode = payload.get("errcode", "M_UNKNOWN") if isinstance(payload, dict) else "M_UNKNOWN"
            error = payload.get("error", "") if isinstance(payload, dict) else raw[:200].decode(errors="replace")
            if errcode == "M_LIMIT_EXCEEDED" and attempt < self.max_rate_limit_retries:
                delay_ms = payload.get("retry_after_ms", 1000) if isinstance(payload, dict) else 1000
                await _sleep(min(max(delay_ms, 50), 10_000) / 1000)
                continue
            logger.debug("%s %s as %s -> %d %s %s", method, path, as_user, resp.code, errcode, error)
            raise MatrixError(resp.code, errcode, error, payload)
        raise AssertionError("unreachable")

    # ---- accounts ----------------------------------------------------------------------

    async def register(self, localpart: str) -> bool:
        """Register a namespace user; False if it already existed."""
        try:
            await self.request("POST", "/_matrix/client/v3/register", {
                "type": "m.login.application_service", "username": localpart,
                "inhibit_login": True})
            return True
        except MatrixError as e:
            if e.errcode == "M_USER_IN_USE":
                return False
            raise

    async def get_displayname(self, user_id: str) -> str | None:
        try:
            body = await self.request("GET", f"/_matrix/client/v3/profile/{q(user_id)}/displayname",
                                      as_user=user_id)
        except MatrixError as e:
            if e.status == 404:
                return None
            raise
        return body.get("displayname")

    async def set_displayname(self, user_id: str, name: str) -> None:
        await self.request("PUT", f"/_matrix/client/v3/profile/{q(user_id)}/displayname",
                           {"displayname": name}, as_user=user_id)

    async def get_login_token(self, user_id: str) -> dict:
        return await self.request("POST", "/_matrix/client/v1/login/get_token", {}, as_user=user_id)

    async def logout_all(self, user_id: str) -> None:
        await self.request("POST", "/_matrix/client/v3/logout/all", {}, as_user=user_id)

    async def joined_rooms(self, user_id: str) -> list[str]:
        body = await self.request("GET", "/_matrix/client/v3/joined_rooms", as_user=user_id)
        return list(body.get("joined_rooms", []))

    async def ping(self, appservice_id: str, txn_id: str) -> dict:
        return await self.request("POST", f"/_matrix/client/v1/appservice/{q(appservice_id)}/ping",
                                  {"transaction_id": txn_id})

    # ---- our homeserver's tenancy extension --------------------------------------------

    async def get_tenant(self, user_id: str) -> str | None:
        try:
            body = await self.request("GET", f"/_homeserver/admin/v1/users/{q(user_id)}/tenant")
        except MatrixError as e:
            if e.status == 404 and e.errcode != "M_UNRECOGNIZED":
                return None
            raise
        return body.get("tenant_id")

    async def set_tenant(self, user_id: str, tenant_id: str) -> None:
        await self.request("PUT", f"/_homeserver/admin/v1/users/{q(user_id)}/tenant",
                           {"tenant_id": tenant_id})

    # ---- rooms -------------------------------------------------------------------------

    async def resolve_alias(self, alias: str, as_user: str | None = None) -> str | None:
        try:
            body = await self.request("GET", f"/_matrix/client/v3/directory/room/{q(alias)}",
                                      as_user=as_user)
        except MatrixError as e:
            if e.status == 404:
                return None
            raise
        return body["room_id"]

    async def set_alias(self, alias: str, room_id: str, as_user: str | None = None) -> None:
        await self.request("PUT", f"/_matrix/client/v3/directory/room/{q(alias)}",
                           {"room_id": room_id}, as_user=as_user)

    async def create_room(self, as_user: str, body: dict) -> str:
        result = await self.request("POST", "/_matrix/client/v3/createRoom", body, as_user=as_user)
        return result["room_id"]

    async def get_state(self, room_id: str, event_type: str, state_key: str, as_user: str) -> dict | None:
        try:
            return await self.request(
                "GET", f"/_matrix/client/v3/rooms/{q(room_id)}/state/{q(event_type)}/{q(state_key)}",
                as_user=as_user)
        except MatrixError as e:
            if e.status == 404:
                return None
            raise

    async def put_state(self, room_id: str, event_type: str, state_key: str, content: dict,
                        as_user: str) -> str:
        body = await self.request(
            "PUT", f"/_matrix/client/v3/rooms/{q(room_id)}/state/{q(event_type)}/{q(state_key)}",
            content, as_user=as_user)
        return body.get("event_id", "")

    async def members(self, room_id: str, as_user: str) -> dict[str, str]:
        """user_id -> membership, from the room's current state."""
        body = await self.request("GET", f"/_matrix/client/v3/rooms/{q(room_id)}/members",
                                  as_user=as_user)
        out = {}
        for ev in body.get("chunk", []):
            out[ev["state_key"]] = ev.get("content", {}).get("membership", "leave")
        return out

    async def invite(self, room_id: str, user_id: str, as_user: str) -> None:
        await self.request("POST", f"/_matrix/client/v3/rooms/{q(room_id)}/invite",
                           {"user_id": user_id}, as_user=as_user)

    async def join(self, room_id: str, as_user: str) -> None:
        await self.request("POST", f"/_matrix/client/v3/join/{q(room_id)}", {}, as_user=as_user)

    async def leave(self, room_id: str, as_user: str) -> None:
        await self.request("POST", f"/_matrix/client/v3/rooms/{q(room_id)}/leave", {},
                           as_user=as_user)

    async def kick(self, room_id: str, user_id: str, reason: str, as_user: str) -> None:
        await self.request("POST", f"/_matrix/client/v3/rooms/{q(room_id)}/kick",
                           {"user_id": user_id, "reason": reason}, as_user=as_user)

    async def send(self, room_id: str, event_type: str, txn_id: str, content: dict,
                   as_user: str) -> str:
        body = await self.request(
            "PUT", f"/_matrix/client/v3/rooms/{q(room_id)}/send/{q(event_type)}/{q(txn_id)}",
            content, as_user=as_user)
        return body["event_id"]

    async def messages(self, room_id: str, as_user: str, *, limit: int, from_token: str | None,
                       types: list[str] | None = None, senders: list[str] | None = None,
                       direction: str = "b") -> dict:
        query: dict[str, Any] = {"dir": direction, "limit": limit}
        if from_token:
            query["from"] = from_token
        event_filter: dict[str, Any] = {}
        if types:
            event_filter["types"] = types
        if senders:
            event_filter["senders"] = senders
        if event_filter:
            query["filter"] = json.dumps(event_filter)
        return await self.request("GET", f"/_matrix/client/v3/rooms/{q(room_id)}/messages",
                                  as_user=as_user, query=query)

    async def member_events(self, room_id: str, as_user: str) -> dict[str, dict]:
        """user_id -> the member event (sender, content) of the room's current state."""
        body = await self.request("GET", f"/_matrix/client/v3/rooms/{q(room_id)}/members",
                                  as_user=as_user)
        return {ev["state_key"]: ev for ev in body.get("chunk", [])}

    async def threads(self, room_id: str, as_user: str, limit: int = 10) -> dict:
        return await self.request("GET", f"/_matrix/client/v1/rooms/{q(room_id)}/threads",
                                  as_user=as_user, query={"limit": limit})

    async def redact(self, room_id: str, event_id: str, txn_id: str, reason: str, as_user: str) -> str:
        body = await self.request(
            "PUT", f"/_matrix/client/v3/rooms/{q(room_id)}/redact/{q(event_id)}/{q(txn_id)}",
            {"reason": reason}, as_user=as_user)
        return body.get("event_id", "")

    async def delete_alias(self, alias: str, as_user: str) -> None:
        try:
            await self.request("DELETE", f"/_matrix/client/v3/directory/room/{q(alias)}", as_user=as_user)
        except MatrixError as e:
            if e.status != 404:
                raise

    async def set_avatar_url(self, user_id: str, url: str) -> None:
        await self.request("PUT", f"/_matrix/client/v3/profile/{q(user_id)}/avatar_url",
                           {"avatar_url": url}, as_user=user_id)

    async def deactivate(self, user_id: str, erase: bool) -> None:
        """`POST /account/deactivate` as the user: application services need no
        user-interactive auth for their own users (as in Synapse)."""
        await self.request("POST", "/_matrix/client/v3/account/deactivate", {"erase": erase},
                           as_user=user_id)

    # ---- media ---------------------------------------------------------------------------

    async def upload(self, as_user: str, fileobj: Any, content_type: str, filename: str) -> str:
        body = await self.request("POST", "/_matrix/media/v3/upload", as_user=as_user,
                                  query={"filename": filename}, raw_body=fileobj,
                                  content_type=content_type)
        return body["content_uri"]

    async def open_download(self, server: str, media_id: str, as_user: str):
        """The homeserver's response to an authenticated media download, body unread (the
        caller streams it); MatrixError for an error answer."""
        url = self._url(f"/_matrix/client/v1/media/download/{q(server)}/{q(media_id)}", as_user, None)
        try:
            resp = await treq.get(url, headers={"Authorization": [f"Bearer {self.as_token}"]},
                                  pool=self._pool, timeout=self.timeout_s, unbuffered=True)
        except Exception as e:
            raise MatrixError(0, "M_CONNECTION_FAILED", f"media download: homeserver unreachable ({e})") from e
        if resp.code >= 400:
            raw = await treq.content(resp)
            try:
                payload = json.loads(raw)
            except ValueError:
                payload = {}
            raise MatrixError(resp.code, payload.get("errcode", "M_UNKNOWN"), payload.get("error", ""), payload)
        return resp


def _sleep(seconds: float) -> defer.Deferred:
    d: defer.Deferred = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d
