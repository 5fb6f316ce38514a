"""The bridge process: database, homeserver client, provisioning, the two HTTP APIs on one
listener, and the webhook sender."""
from __future__ import annotations

import logging
import uuid

from twisted.internet import defer, reactor, threads
from twisted.web import server

from appservice.erp_bridge import store
from appservice.erp_bridge.as_api import AppServiceApi
from appservice.erp_bridge.config import BridgeConfig
from appservice.erp_bridge.db import Database, apply_migrations, wait_for_database
from appservice.erp_bridge.erp_api import ErpApi
from appservice.erp_bridge.element_login import PAGE
from appservice.erp_bridge.http import LimitedRequest, RawBody, Router
from appservice.erp_bridge.matrix import MatrixClient, MatrixError
from appservice.erp_bridge.media_links import MediaLinks
from appservice.erp_bridge.media_proxy import MediaProxy
from appservice.erp_bridge.posting import Poster
from appservice.erp_bridge.provisioning import Provisioner
from appservice.erp_bridge.readback import Reader
from appservice.erp_bridge.webhook import WebhookSender

logger = logging.getLogger("erp_bridge")
_TXN_RETENTION_MS = 7 * 24 * 3600 * 1000


class Bridge:
    def __init__(self, config: BridgeConfig) -> None:
        config.require_secrets()
        self.config = config
        self.db = Database(config.database.effective_dsn, config.database.max_connections)
        self.matrix = MatrixClient(config.homeserver.url, config.appservice.as_token or "")
        self.provisioner = Provisioner(config, self.db, self.matrix)
        self.links = MediaLinks(config.bridge_url, config.erp.api_token or "", config.erp.media_link_ttl_s)
        self.webhook: WebhookSender | None = None
        if config.erp.webhook_url:
            self.webhook = WebhookSender(
                self.db, config.erp.webhook_url, config.erp.webhook_secret or "",
                timeout_s=config.erp.webhook_timeout_s,
                initial_backoff_s=config.erp.webhook_initial_backoff_s,
                max_backoff_s=config.erp.webhook_max_backoff_s)
        self.router = Router()
        ErpApi(config, self.provisioner, Poster(self.provisioner), Reader(self.provisioner, self.links),
               MediaProxy(self.db, self.matrix, self.provisioner.ids, self.links)).register(self.router)
        AppServiceApi(config, self.db, self.provisioner, self._queued, self.links).register(self.router)
        self.router.add("GET", "/" + config.element_login_page.lstrip("/"), self._element_login_page)
        self.port = None
        self._stopping = False

    async def _element_login_page(self, request):
        """The Element sign-in helper, for a reverse proxy to serve on Element's origin."""
        request.setHeader(b"cache-control", b"no-store")
        return 200, RawBody(PAGE.encode(), "text/html; charset=utf-8")

    def _queued(self, room_ids: list[str]) -> None:
        if self.webhook is not None:
            self.webhook.wake(room_ids)

    async def start(self) -> None:
        dsn = self.config.database.effective_dsn
        await threads.deferToThread(wait_for_database, dsn, self.config.database.connect_timeout_s)
        self.db.start()
        version = await self.db.run(apply_migrations)
        logger.info("database ready (erp_bridge schema version %d)", version)
        site = server.Site(self.router)
        site.noisy = False
        # Bodies up to an attachment (plus room for a multipart envelope); JSON routes
        # read at most 1 MiB of it.
        site.requestFactory = type("BridgeRequest", (LimitedRequest,), {
            "max_body_bytes": self.config.erp.max_attachment_bytes + 65536})
        self.port = reactor.listenTCP(self.config.listen.port, site, interface=self.config.listen.host)
        host = self.port.getHost()
        logger.info("ERP bridge listening on http://%s:%d (homeserver %s, as %s)",
                    host.host, host.port, self.config.homeserver.url, self.config.bot_user_id)
        if self.webhook is not None:
            await self.webhook.start()
            logger.info("webhook deliveries go to %s", self.config.erp.webhook_url)
        else:
            logger.info("no erp.webhook_url: messages are not forwarded to the ERP")
        defer.ensureDeferred(self._greet_homeserver())
        reactor.callLater(60, self._prune)

    async def _greet_homeserver(self) -> None:
        """Register the main bot and ping the homeserver, retrying while the homeserver is
        still starting. Failure here is logged, never fatal: the ERP API reports its own."""
        delay = 0.5
        for _ in range(40):
            if self._stopping:
                return
            try:
                await self.matrix.register(self.config.appservice.sender_localpart)
                result = await self.matrix.ping(self.config.appservice.id, f"erp-bridge-{uuid.uuid4().hex[:8]}")
                logger.info("homeserver reached us in %s ms (application-service ping)",
                            result.get("duration_ms"))
                await self._move_legacy_aliases()
                return
            except MatrixError as e:
                if e.status != 0:
                    logger.warning("application-service handshake with the homeserver failed: %s "
                                   "(is the registration file listed in app_service_config_files?)", e)
                    return
            d: defer.Deferred = defer.Deferred()
            reactor.callLater(delay, d.callback, None)
            await d
            delay = min(delay * 2, 5)
        logger.warning("homeserver at %s not reachable", self.config.homeserver.url)

    async def _move_legacy_aliases(self) -> None:
        """Objects of schema 1 get their tenant-carrying alias on the homeserver; what
        fails is retried every minute."""
        while not self._stopping:
            if await self.provisioner.move_all_legacy_aliases() == 0:
                return
            d: defer.Deferred = defer.Deferred()
            reactor.callLater(60, d.callback, None)
            await d

    def _prune(self) -> None:
        if self._stopping:
            return
        d = self.db.run(store.prune_transactions, _TXN_RETENTION_MS)
        d.addErrback(lambda f: logger.warning("pruning transactions failed: %s", f.getErrorMessage()))
        reactor.callLater(3600, self._prune)

    async def stop(self) -> None:
        self._stopping = True
        if self.port is not None:
            await self.port.stopListening()
        if self.webhook is not None:
            await self.webhook.close()
        await self.matrix.close()
        self.db.stop()
