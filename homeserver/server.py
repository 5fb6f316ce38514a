"""Process wiring: config -> database (embedded or DSN) -> migrations -> signing key ->
the room core -> HTTP listeners."""
from __future__ import annotations

import logging
from typing import Any

from twisted.internet import defer

from homeserver import metrics
from homeserver.accounts import Accounts
from homeserver.aggregations import Aggregations
from homeserver.audit import Audit
from homeserver.client_ips import ClientIps
from homeserver.config import Config
from homeserver.event_cache import EventCache
from homeserver.event_creation import EventCreator
from homeserver.guests import GuestRooms
from homeserver.media.repository import MediaRepository
from homeserver.membership import Membership
from homeserver.persister import Persister
from homeserver.profiles import Profiles
from homeserver.push.evaluation import Push
from homeserver.relations import Relations
from homeserver.room_blocks import RoomBlocks
from homeserver.room_heads import RoomHeads
from homeserver.tenancy import Tenancy
from homeserver.signing_key import load_or_create_signing_key
from storage.database import Database
from storage.embedded import EmbeddedPostgres
from storage.migrate import apply_migrations
from storage.search import use_language

logger = logging.getLogger(__name__)


class HomeServer:
    """Holds the long-lived parts of one server process."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.server_name = config.server_name
        self.embedded: EmbeddedPostgres | None = None
        self.db: Database = None  # type: ignore[assignment]  # set in start()
        self.signing_key = load_or_create_signing_key(config.signing_key_file)
        self.room_heads: RoomHeads = None  # type: ignore[assignment]
        # The sync engine (sync.engine.SyncEngine), attached by the composition root;
        # typed loosely because the core does not import the packages built on it.
        self.sync: Any = None
        self.appservices: Any = None  # appservice.registry.AppServices, likewise
        self.media: MediaRepository = None  # type: ignore[assignment]  # set in start()
        self.url_previews: Any = None  # homeserver.media.url_preview.UrlPreviewer when enabled
        self.ready = False  # start-up complete: /health answers 200 from now on
        self.draining = False  # shutting down: new requests get 503
        self.requests_in_flight = 0
        self.client_ips: ClientIps = None  # type: ignore[assignment]  # set in start()
        self.push: Push = None  # type: ignore[assignment]  # set in start()
        self.pushers: Any = None  # pushers.registry.Pushers, attached by the composition root
        self.ratelimiter: Any = None  # client_api.ratelimit.Ratelimiter, likewise
        # homeserver.federation.service.Federation when federation.enabled, else None.
        self.federation: Any = None
        # homeserver.replication.Replication when worker.role is not main, else None.
        self.replication: Any = None
        self.remote_writes: Any = None  # homeserver.remote_writes.RemoteWrites, likewise
        self.writer_layout: Any = None  # homeserver.writer_layout.WriterLayout, likewise
        self.internal: Any = None  # homeserver.internal_http.InternalClient, likewise

    def open_database(self) -> None:
        """Blocking: start the embedded Postgres if needed, connect, migrate."""
        dsn = self.config.database.dsn
        if dsn is None:
            self.embedded = EmbeddedPostgres(self.config.data_dir)
            dsn = self.embedded.start()
        if self.config.worker.multi_process:
            # Sessions named after the instance: readers tell a dead writer by its absence.
            from psycopg2.extensions import make_dsn
            from homeserver.replication import application_name
            dsn = make_dsn(dsn, application_name=application_name(self.config.worker.instance_name))
        self.db = Database(dsn, self.config.database.max_connections)
        self.db.observe = metrics.observe_db_transaction
        version = self.db.run_sync(apply_migrations)
        logger.info("database schema at version %d", version)
        if (read := self.db.run_sync(use_language, self.config.search.language)) is not None:
            logger.info("search index built with %r (%d events read)", self.config.search.language, read)

    async def start(self) -> None:
        self.db.start()
        self.room_heads = RoomHeads(self.db)
        self.event_cache = EventCache(self.db, self._room_version_of)
        self.persister = Persister(self.db, self._on_persist_failure)
        await self.persister.start()
        self.persister.add_listener(self._after_persist)
        if self.config.worker.multi_process:
            from homeserver.internal_http import InternalClient
            from homeserver.replication import Replication
            from homeserver.remote_writes import RemoteWrites
            from homeserver.writer_layout import WriterLayout
            self.internal = InternalClient(self)
            self.replication = Replication(self)
            self.writer_layout = WriterLayout(self)
            await self.writer_layout.start()  # before the positions: which writers count
            await self.replication.start()
            self.remote_writes = RemoteWrites(self)
        self.aggregations = Aggregations(self)  # a persist listener: before the sync engine's
        self.relations = Relations(self)
        self.push = Push(self)
        self.persister.add_enqueue_hook(self.push.capture)
        self.persister.add_preparer(self.push.prepare)
        # Before the sync engine's listener: counts must be current when /sync wakes.
        self.persister.add_listener(self.push.on_persisted)
        self.accounts = Accounts(self)
        self.profiles = Profiles(self)
        self.event_creator = EventCreator(self)
        self.membership = Membership(self)
        self.tenancy = Tenancy(self)
        self.persister.add_listener(GuestRooms(self).on_events)
        self.media = MediaRepository(self)
        await self.media.start()
        if self.config.media.url_preview.enabled:
            from homeserver.media.url_preview import UrlPreviewer
            self.url_previews = UrlPreviewer(self)
        self.room_blocks = RoomBlocks(self)
        await self.room_blocks.start()
        self.audit = Audit(self)
        self.client_ips = ClientIps(self)
        self.client_ips.start()
        from homeserver import admin_tasks  # noqa: PLC0415  (imports the room core)
        await admin_tasks.fail_interrupted(self)
        metrics.register_server(self)
        if self.config.federation.enabled:
            from homeserver.federation.service import Federation
            self.federation = Federation(self)
            await self.federation.start()

    @property
    def writes_rooms(self) -> bool:
        return self.config.worker.role in ("main", "writer")

    def owns_room(self, room_id: str) -> bool:
        """Whether this process builds the room's events (always, in role main); during a
        move of rooms between writers, the new owner (homeserver/writer_layout.py)."""
        if self.writer_layout is None:
            return True
        return self.writer_layout.is_writer and self.writer_layout.owns(room_id)

    def builds_room(self, room_id: str) -> bool:
        """Whether this process builds the room's events now: its owner once the room is
        handed over, or its previous writer until it has released it (writes it started)."""
        if self.writer_layout is None:
            return True
        return self.writer_layout.is_writer and self.writer_layout.may_build(room_id)

    def invalidate_elsewhere(self, cache: str, key: str) -> defer.Deferred:
        """Tell the other processes to drop `key` from `cache` (several processes,
        docs/scaling.md); with one process there is nobody to tell."""
        if self.replication is None:
            return defer.succeed(None)
        return self.replication.invalidate(cache, key)

    async def _room_version_of(self, room_id: str) -> str | None:
        head = await self.room_heads.get(room_id)
        return head.room_version.identifier if head else None

    def _on_persist_failure(self, room_ids: set[str], event_ids: list[str]) -> None:
        for room_id in room_ids:
            self.room_heads.invalidate(room_id)
        self.event_cache.forget(event_ids)  # never written: must not be served

    def _after_persist(self, events) -> None:
        for ev in events:
            target = ev.redacts
            if not target:
                continue
            self.event_cache.mark_redacted(ev.room_id, target, ev.event_id)
            head = self.room_heads.peek(ev.room_id)
            for state_event in head.state.values() if head else ():
                if state_event.event_id == target:  # the head may hold its own copy
                    state_event.mark_redacted(ev.event_id)

    def shutdown(self) -> None:
        # Each part stops even if one before it fails (say, the database is gone and
        # presence cannot be saved): the embedded PostgreSQL must always be stopped.
        for part in (self.replication, self.federation, self.sync, self.appservices, self.pushers, self.media, self.client_ips,
                     self.db, self.embedded):
            if part is None:
                continue
            try:
                part.stop()
            except Exception:
                logger.exception("stopping %s failed", type(part).__name__)
