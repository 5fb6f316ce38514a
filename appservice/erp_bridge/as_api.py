"""The application-service API the homeserver calls (/_matrix/app/v1): transactions,
user and alias queries, ping. Every call must carry the hs_token (Authorization: Bearer,
or the legacy `access_token` query parameter)."""
from __future__ import annotations

import logging
from typing import Callable

from twisted.web.iweb import IRequest

from appservice.erp_bridge.config import BridgeConfig
from appservice.erp_bridge.db import Database
from appservice.erp_bridge.errors import ApiError
from appservice.erp_bridge.http import Router, check_token, read_json, read_optional_json
from appservice.erp_bridge.ids import Ids
from appservice.erp_bridge.matrix import MatrixError
from appservice.erp_bridge.media_links import MediaLinks
from appservice.erp_bridge.provisioning import Provisioner
from appservice.erp_bridge.webhook import queue_transaction

logger = logging.getLogger(__name__)
MAX_TRANSACTION_BYTES = 64 * 1024 * 1024


class AppServiceApi:
    def __init__(self, config: BridgeConfig, db: Database, provisioner: Provisioner,
                 on_queued: Callable[[list[str]], None], links: MediaLinks | None = None) -> None:
        self.links = links
        self.config = config
        self.db = db
        self.provisioner = provisioner
        self.on_queued = on_queued
        self.ids = Ids(config.appservice.namespace_prefix, config.homeserver.server_name)
        self.webhook_enabled = bool(config.erp.webhook_url)
        assert config.appservice.hs_token
        self.hs_token = config.appservice.hs_token
        self.transactions_taken = 0

    def register(self, router: Router) -> None:
        # The current paths, and the legacy ones homeservers fall back to.
        for prefix in ("/_matrix/app/v1", ""):
            router.add("PUT", prefix + "/transactions/{txn_id}", self.transaction)
            router.add("GET", prefix + "/users/{user_id}", self.query_user)
            router.add("GET", prefix + "/rooms/{alias}", self.query_alias)
        router.add("POST", "/_matrix/app/v1/ping", self.ping)

    def _auth(self, request: IRequest) -> None:
        check_token(request, self.hs_token, allow_query=True)

    async def transaction(self, request: IRequest, txn_id: str):
        self._auth(request)
        data = read_json(request, MAX_TRANSACTION_BYTES)
        if not isinstance(data, dict) or not isinstance(data.get("events", []), list):
            raise ApiError(400, "M_BAD_JSON", "body must be an object with an `events` array")
        events = data.get("events", [])
        # 200 only once the messages are durably queued: the commit happens first.
        rooms = await self.db.run(queue_transaction, txn_id, events, self.webhook_enabled, self.links)
        if rooms is None:
            logger.debug("transaction %s already taken in", txn_id)
        else:
            self.transactions_taken += 1
            if rooms:
                self.on_queued(rooms)
        return 200, {}

    async def query_user(self, request: IRequest, user_id: str):
        self._auth(request)
        if self.ids.in_namespace(user_id) and await self.provisioner.known_user(user_id):
            return 200, {}
        raise ApiError(404, "IO.ERPCHAT.NOT_FOUND", "no such user on the ERP bridge")

    async def query_alias(self, request: IRequest, alias: str):
        self._auth(request)
        try:
            if await self.provisioner.restore_alias(alias):
                return 200, {}
        except MatrixError as e:
            logger.warning("restoring alias %s failed: %s", alias, e)
        raise ApiError(404, "IO.ERPCHAT.NOT_FOUND", "no such room on the ERP bridge")

    async def ping(self, request: IRequest):
        self._auth(request)
        data = read_optional_json(request)
        logger.info("ping from the homeserver (transaction_id %s)",
                    data.get("transaction_id") if isinstance(data, dict) else None)
        return 200, {}
