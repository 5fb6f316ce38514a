"""The ERP-facing REST API (/_erp/v1), JSON in and out, `Authorization: Bearer <erp.api_token>`.
Handlers check the token and the body, then hand over to the Provisioner."""
from __future__ import annotations

import logging

from twisted.web.iweb import IRequest

from appservice.erp_bridge.config import BridgeConfig
from appservice.erp_bridge.errors import ApiError, invalid
from appservice.erp_bridge.http import Router, check_token, parse_body, query_arg, read_optional_json
from appservice.erp_bridge.matrix import MatrixError
from appservice.erp_bridge.models import MessageBody, ObjectBody, TenantBody, UserBody
from appservice.erp_bridge.provisioning import Provisioner

logger = logging.getLogger(__name__)
PREFIX = "/_erp/v1"


def homeserver_failure(e: MatrixError) -> ApiError:
    """The homeserver failed a step: nothing the ERP did wrong, and repeating the call is
    safe (it resumes where this one stopped)."""
    if e.status == 0:
        return ApiError(503, "IO.ERPCHAT.HOMESERVER_UNAVAILABLE",
                        f"the homeserver cannot be reached; retry later ({e.error})")
    return ApiError(502, "IO.ERPCHAT.HOMESERVER_ERROR",
                    f"the homeserver refused a step ({e.status} {e.errcode}: {e.error}); retry later",
                    homeserver_status=e.status, homeserver_errcode=e.errcode)


class ErpApi:
    def __init__(self, config: BridgeConfig, provisioner: Provisioner) -> None:
        assert config.erp.api_token
        self.api_token = config.erp.api_token
        self.provisioner = provisioner

    def register(self, router: Router) -> None:
        router.add("PUT", PREFIX + "/tenants/{tenant_id}", self._wrap(self.put_tenant))
        router.add("PUT", PREFIX + "/users/{erp_user_id}", self._wrap(self.put_user))
        router.add("POST", PREFIX + "/users/{erp_user_id}/login-token", self._wrap(self.login_token))
        router.add("PUT", PREFIX + "/objects/{object_type}/{object_id}", self._wrap(self.put_object))
        router.add("POST", PREFIX + "/objects/{object_type}/{object_id}/messages",
                   self._wrap(self.post_message))
        router.add("GET", PREFIX + "/objects/{object_type}/{object_id}/messages",
                   self._wrap(self.get_messages))

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

    async def put_tenant(self, request: IRequest, tenant_id: str):
        body = parse_body(request, TenantBody)
        return 200, await self.provisioner.put_tenant(tenant_id, body)

    async def put_user(self, request: IRequest, erp_user_id: str):
        body = parse_body(request, UserBody)
        return 200, await self.provisioner.put_user(erp_user_id, body)

    async def login_token(self, request: IRequest, erp_user_id: str):
        data = read_optional_json(request)
        if not isinstance(data, dict):
            raise ApiError(400, "M_BAD_JSON", "request body must be a JSON object")
        return 200, await self.provisioner.login_token(erp_user_id)

    async def put_object(self, request: IRequest, object_type: str, object_id: str):
        body = parse_body(request, ObjectBody)
        return 200, await self.provisioner.put_object(object_type, object_id, body)

    async def post_message(self, request: IRequest, object_type: str, object_id: str):
        body = parse_body(request, MessageBody)
        return 200, await self.provisioner.post_message(object_type, object_id, body)

    async def get_messages(self, request: IRequest, object_type: str, object_id: str):
        raw_limit = query_arg(request, "limit")
        try:
            limit = int(raw_limit) if raw_limit is not None else 20
        except ValueError:
            raise invalid("limit must be an integer") from None
        if not 1 <= limit <= 100:
            raise invalid("limit must be between 1 and 100")
        from_token = query_arg(request, "from") or None
        return 200, await self.provisioner.get_messages(object_type, object_id, limit, from_token)
