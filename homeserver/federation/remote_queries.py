"""Questions this server asks others for its clients: profiles and E2E keys of their
users (passed through, not cached: device-list updates tell clients when to ask again)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet import defer

from homeserver.errors import MatrixError
from homeserver.federation.client import FederationError
from homeserver.federation.exposure import server_of

if TYPE_CHECKING:
    from homeserver.server import HomeServer

F1 = "/_matrix/federation/v1"
KEYS_TIMEOUT_S = 10


class RemoteQueries:
    def __init__(self, hs: "HomeServer", federation) -> None:
        self.hs = hs
        self.federation = federation

    async def profile(self, user_id: str) -> dict | None:
        """The remote user's profile; None if their server says there is no such user."""
        try:
            answer = await self.federation.client.get(server_of(user_id), F1 + "/query/profile",
                                                      {"user_id": user_id}, timeout=KEYS_TIMEOUT_S)
        except FederationError as e:
            if e.status in (403, 404):
                return None
            raise MatrixError(502, "M_UNKNOWN", f"the user's server did not answer: {e.error}") from None
        if not isinstance(answer, dict):
            return None
        return {k: v for k, v in answer.items() if k in ("displayname", "avatar_url") and isinstance(v, str)}

    async def _per_server(self, wanted: dict[str, Any], request) -> tuple[list[tuple[str, Any]], dict]:
        """Run `request(server, {user: ...})` for each server at once; (answers, failures)."""
        by_server: dict[str, dict[str, Any]] = {}
        for user_id, value in wanted.items():
            by_server.setdefault(server_of(user_id), {})[user_id] = value
        servers = list(by_server)
        results = await defer.DeferredList(
            [defer.ensureDeferred(request(s, by_server[s])) for s in servers], consumeErrors=True)
        answers, failures = [], {}
        for server, (ok, value) in zip(servers, results):
            if ok and isinstance(value, dict):
                answers.append((server, value))
            else:
                error = value.value if hasattr(value, "value") else value
                status = getattr(error, "status", 0) or 503
                failures[server] = {"status": status, "message": str(error)}
        return answers, failures

    async def keys_query(self, wanted: dict[str, list[str]]) -> tuple[dict[str, Any], dict]:
        """(device_keys / master_keys / self_signing_keys of remote users, failures)."""
        async def ask(server: str, users: dict) -> Any:
            return await self.federation.client.post(server, F1 + "/user/keys/query", {"device_keys": users},
                                                     timeout=KEYS_TIMEOUT_S)
        answers, failures = await self._per_server(wanted, ask)
        merged: dict[str, Any] = {"device_keys": {}, "master_keys": {}, "self_signing_keys": {}}
        for server, answer in answers:
            for field in merged:
                for user_id, value in (answer.get(field) or {}).items():
                    if server_of(user_id) == server and isinstance(value, dict):
                        merged[field][user_id] = value
        return merged, failures

    async def keys_claim(self, wanted: dict[str, dict[str, str]]) -> tuple[dict[str, Any], dict]:
        async def ask(server: str, users: dict) -> Any:
            return await self.federation.client.post(server, F1 + "/user/keys/claim", {"one_time_keys": users},
                                                     timeout=KEYS_TIMEOUT_S)
        answers, failures = await self._per_server(wanted, ask)
        claimed: dict[str, Any] = {}
        for server, answer in answers:
            for user_id, devices in (answer.get("one_time_keys") or {}).items():
                if server_of(user_id) == server and isinstance(devices, dict):
                    claimed[user_id] = devices
        return claimed, failures
