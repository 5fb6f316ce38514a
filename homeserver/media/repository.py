"""The media repository: uploads (direct, or to an id reserved with /create), the tenant
wall on every read, waiting for content not uploaded yet, cached thumbnails, and deletion.

Bytes are content-addressed files (`files.py`); metadata is in PostgreSQL
(`storage/media.py`). A file is shared by every media row of the same content, so it is
removed only with the last row naming it. Placing a file (or a thumbnail) with the row
naming it, and deciding to remove one with the removal, each happen in one transaction
holding the content's advisory lock (`storage.media.lock_content`), so an upload of the
same bytes never loses its file, whichever processes the two run in. Other file and
image work runs on the repository's own thread pool."""
from __future__ import annotations

import logging
import re
import secrets
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twisted.internet import defer, reactor, threads
from twisted.python.threadpool import ThreadPool

from homeserver.async_utils import Coalescer, KeyedLock
from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.media import content_types
from homeserver.media.files import MediaFiles
from homeserver.media.thumbnails import (
    EXTENSIONS,
    CannotThumbnail,
    TooLargeToThumbnail,
    choose_size,
    make_thumbnail,
)
from homeserver.media.upload_sink import Producer, ReceivedFile, UploadSink
from homeserver.write_behind import WriteBehind
from storage import media as media_store
from storage.database import Cursor
from storage.media import MediaRow, ThumbnailRow

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)

MEDIA_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,255}")
DEFAULT_WAIT_MS = 20_000
MAX_WAIT_MS = 60_000
MAX_UPLOAD_NAME = 255
ACCESS_FLUSH_S = 10.0
UPLOADED_INVALIDATION = "media_uploaded"  # several processes: a pending media id was uploaded


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class ServedFile:
    path: Path
    size: int
    content_type: str


class MediaRepository:
    def __init__(self, hs: "HomeServer") -> None:
        self.hs = hs
        self.config = hs.config.media
        self.files = MediaFiles(hs.config.data_dir / "media", hs.config.worker.instance_name)
        self.pool = ThreadPool(minthreads=0, maxthreads=4, name="media")
        self._waiters: dict[str, list[defer.Deferred]] = {}
        self._thumbnailing = Coalescer()
        # By SHA-256: this process's contenders for a content's database lock queue here,
        # not each on a database connection.
        self._content_locks = KeyedLock()
        # Downloads note when media was last used; deleting media by date goes by it.
        self._accesses: WriteBehind[str, int] = WriteBehind(hs, media_store.note_accesses, ACCESS_FLUSH_S,
                                                            "media last-access times")
        if hs.replication is not None:  # an upload to another process wakes the downloads waiting here
            hs.replication.on_invalidate(UPLOADED_INVALIDATION, self._uploaded)

    async def start(self) -> None:
        self.pool.start()
        await self.run_in_pool(self.files.prepare, not self.hs.config.worker.multi_process)
        self._accesses.start()

    def stop(self) -> None:
        self._accesses.stop()
        self.pool.stop()

    def run_in_pool(self, fn: Any, *args: Any) -> defer.Deferred:
        return threads.deferToThreadPool(reactor, self.pool, fn, *args)

    def open_upload_sink(self, producer: Producer | None = None) -> UploadSink:
        return UploadSink(self.files.tmp_dir, self.pool, producer)

    def mxc(self, media_id: str) -> str:
        return f"mxc://{self.hs.server_name}/{media_id}"

    # --- uploads -------------------------------------------------------------------------

    def check_upload(self, content_type_header: str | None, filename: str | None) -> tuple[str, str | None]:
        """The stored content type and upload name, or the spec's error."""
        content_type = content_types.normalize(content_type_header)
        if content_type is None:
            raise MatrixError(400, "M_INVALID_PARAM", "the Content-Type header is not a media type")
        if not content_types.is_allowed(content_type, self.config.allowed_content_types):
            raise forbidden(f"this server does not accept uploads of type {content_types.base_type(content_type)}")
        if filename is not None and len(filename) > MAX_UPLOAD_NAME:
            raise MatrixError(400, "M_INVALID_PARAM", f"filename is longer than {MAX_UPLOAD_NAME} characters")
        return content_type, filename or None

    async def upload(self, user_id: str, sink: UploadSink, content_type: str, upload_name: str | None) -> str:
        return await self.store_received(user_id, await sink.finish(), content_type, upload_name)

    async def store_received(self, user_id: str, received: ReceivedFile, content_type: str,
                             upload_name: str | None) -> str:
        """Keep a received file (an upload, a URL preview's image) as new media of `user_id`."""
        try:
            media_id = secrets.token_urlsafe(18)
            tenant = await self.hs.tenancy.tenant_of(user_id)
            await self._keep(received, media_store.insert_uploaded, media_id, user_id, tenant, content_type,
                             upload_name, received.size, received.sha256, now_ms())
        finally:
            await self.run_in_pool(received.path.unlink, True)
        return media_id

    async def _keep(self, received: ReceivedFile, record: Any, *args: Any) -> Any:
        """Move a received file to its content address and write the row naming it
        (`record(cursor, *args)`, whose answer this is), under the content's lock."""
        async with self._content_locks.hold(received.sha256):
            return await self.hs.db.run(_place_content, self.files, received, record, *args)

    async def create(self, user_id: str) -> tuple[str, int]:
        """Reserve a media id for a later PUT; (media id, unused_expires_at)."""
        media_id = secrets.token_urlsafe(18)
        now = now_ms()
        expires = now + self.config.unused_expiration_ms
        tenant = await self.hs.tenancy.tenant_of(user_id)
        ok = await self.hs.db.run(media_store.create_pending, media_id, user_id, tenant, now,
                                  expires, self.config.max_pending_uploads)
        if not ok:
            raise MatrixError(429, "M_LIMIT_EXCEEDED",
                              "too many media ids waiting for their upload; upload or let them expire",
                              retry_after_ms=60_000)
        return media_id, expires

    async def upload_to(self, user_id: str, server_name: str, media_id: str, sink: UploadSink,
                        content_type: str, upload_name: str | None) -> None:
        row = await self._reservation(user_id, server_name, media_id)
        if row.uploaded_ts is not None:
            raise MatrixError(409, "M_CANNOT_OVERWRITE_MEDIA", "media already uploaded")
        received = await sink.finish()
        try:
            done = await self._keep(received, media_store.complete_pending, media_id, content_type,
                                    upload_name, received.size, received.sha256, now_ms())
        finally:
            await self.run_in_pool(received.path.unlink, True)
        if not done:
            raise MatrixError(409, "M_CANNOT_OVERWRITE_MEDIA", "media already uploaded")
        self._uploaded(media_id)
        await self.hs.invalidate_elsewhere(UPLOADED_INVALIDATION, media_id)

    def _uploaded(self, media_id: str) -> None:
        for d in self._waiters.pop(media_id, []):
            d.callback(None)

    async def _reservation(self, user_id: str, server_name: str, media_id: str) -> MediaRow:
        row = None
        if server_name == self.hs.server_name and MEDIA_ID_RE.fullmatch(media_id):
            row = await self.hs.db.run(media_store.get_media, media_id)
        # Another tenant's media id answers exactly like one that does not exist.
        if row is None or _expired(row, now_ms()) or row.tenant_id != await self.hs.tenancy.tenant_of(user_id):
            raise not_found("unknown media id")
        if row.user_id != user_id:
            raise forbidden("this media id was created by another user")
        return row

    # --- reads ---------------------------------------------------------------------------

    async def get_visible(self, server_name: str, media_id: str, asker: str | None,
                          timeout_ms: int | None) -> MediaRow:
        """The uploaded media, if `asker` may see it (None: an unauthenticated request,
        which sees only media of users without a tenant). Anything else is 404
        M_NOT_FOUND, exactly as for an id that does not exist. Media reserved but not
        uploaded yet is waited for up to `timeout_ms`, then 504 M_NOT_YET_UPLOADED."""
        if server_name != self.hs.server_name or not MEDIA_ID_RE.fullmatch(media_id):
            # No federation yet: remote media is not fetched.
            raise not_found("media not found")
        row = await self.hs.db.run(media_store.get_media, media_id)
        tenant = await self.hs.tenancy.tenant_of(asker) if asker is not None else None
        if row is None or row.quarantined or row.tenant_id != tenant or _expired(row, now_ms()):
            raise not_found("media not found")
        if row.uploaded_ts is None:
            row = await self._wait_for_upload(row, timeout_ms)
        self._accesses.note(row.media_id, now_ms())
        return row

    async def _wait_for_upload(self, row: MediaRow, timeout_ms: int | None) -> MediaRow:
        wait_ms = DEFAULT_WAIT_MS if timeout_ms is None else max(0, min(timeout_ms, MAX_WAIT_MS))
        deadline = min(now_ms() + wait_ms, row.unused_expires_ts or 0)
        d: defer.Deferred = defer.Deferred()
        self._waiters.setdefault(row.media_id, []).append(d)
        d.addTimeout(max(0, deadline - now_ms()) / 1000, reactor)
        try:
            await d
        except defer.TimeoutError:
            waiting = self._waiters.get(row.media_id, [])
            if d in waiting:
                waiting.remove(d)
            if not waiting:
                self._waiters.pop(row.media_id, None)
            raise MatrixError(504, "M_NOT_YET_UPLOADED", "the content has not been uploaded yet") from None
        fresh = await self.hs.db.run(media_store.get_media, row.media_id)
        if fresh is None or fresh.uploaded_ts is None or fresh.quarantined:
            raise not_found("media not found")
        return fresh

    async def content(self, row: MediaRow) -> ServedFile:
        path = self.files.content_path(row.sha256 or "")
        if not await self.run_in_pool(path.exists):
            logger.error("media %s: its file %s is missing", row.media_id, path)
            raise not_found("media not found")
        return ServedFile(path, int(row.size or 0), row.content_type or content_types.DEFAULT_TYPE)

    async def thumbnail(self, row: MediaRow, width: int, height: int, method: str,
                        animated: bool) -> ServedFile:
        size = choose_size(self.config.thumbnail_sizes, width, height, method)
        sha = row.sha256 or ""
        key = (sha, size.width, size.height, size.method, animated)
        cached = await self.hs.db.run(media_store.get_thumbnail, *key)
        if cached is None:
            cached = await self._thumbnailing.run(key, lambda: self._make_thumbnail(row, size, animated))
        if cached.is_original:
            return await self.content(row)
        path = self._thumbnail_path(sha, cached)
        if not await self.run_in_pool(path.exists):  # the cache file was removed: make it again
            cached = await self._thumbnailing.run(key, lambda: self._make_thumbnail(row, size, animated))
            path = self._thumbnail_path(sha, cached)
        return ServedFile(path, cached.size, cached.content_type)

    def _thumbnail_path(self, sha: str, thumb: ThumbnailRow) -> Path:
        return self.files.thumbnail_path(sha, thumb.width, thumb.height, thumb.method, thumb.animated,
                                         EXTENSIONS[thumb.content_type])

    async def _make_thumbnail(self, row: MediaRow, size: Any, animated: bool) -> ThumbnailRow:
        source = (await self.content(row)).path
        try:
            made = await self.run_in_pool(make_thumbnail, source, self.files.tmp_dir, size,
                                          animated, self.config.max_image_pixels)
        except TooLargeToThumbnail:
            raise MatrixError(413, "M_TOO_LARGE", "the content is too large to thumbnail") from None
        except CannotThumbnail:
            raise MatrixError(400, "M_UNKNOWN", "cannot generate a thumbnail of this content") from None
        thumb = ThumbnailRow(size.width, size.height, size.method, animated, made.content_type,
                             int(row.size or 0), made.is_original)
        sha = row.sha256 or ""
        final = self._thumbnail_path(sha, thumb) if made.path is not None else None
        try:
            async with self._content_locks.hold(sha):
                kept = await self.hs.db.run(_place_thumbnail, self.files, sha, thumb, made.path, final, now_ms())
        finally:  # placed by a link (or not at all): the made file goes either way
            if made.path is not None:
                await self.run_in_pool(made.path.unlink, True)
        if kept is None:  # the media was deleted meanwhile
            raise not_found("media not found")
        return kept

    # --- deletion ----------------------------------------------------------------------

    async def delete(self, media_ids: list[str]) -> list[str]:
        """Delete local media (uploaded or reserved): their rows, and each content file
        with its thumbnails once no media row names that content any more. Returns the
        ids deleted."""
        if not media_ids:
            return []
        deleted, hashes = await self.hs.db.run(media_store.delete_media, media_ids,
                                               f"mxc://{self.hs.server_name}/")
        for sha in hashes:
            async with self._content_locks.hold(sha):
                await self.hs.db.run(_forget_content, self.files, sha)
        return deleted

    def last_access_ts(self, row: MediaRow) -> int | None:
        """When the media was last downloaded, counting accesses not yet written."""
        noted = self._accesses.pending.get(row.media_id)
        return max(row.last_access_ts or 0, noted) if noted is not None else row.last_access_ts

    def flush_accesses(self) -> defer.Deferred:
        """Write the last-access times noted so far (before reading them)."""
        return self._accesses.flush()


# One transaction each, holding the content's lock: the file step runs inside it (on the
# database thread), so no process places or removes the content's files between another's
# check of the rows and its change to them. Run again when the transaction is retried,
# each links its file again if it is gone (the received file is removed only afterwards).

def _place_content(cur: Cursor, files: MediaFiles, received: ReceivedFile, record: Any, *args: Any) -> Any:
    media_store.lock_content(cur, received.sha256)
    files.commit(received.path, received.sha256)
    return record(cur, *args)


def _place_thumbnail(cur: Cursor, files: MediaFiles, sha: str, thumb: ThumbnailRow, made: Path | None,
                     final: Path | None, now: int) -> ThumbnailRow | None:
    """The thumbnail's row (its file moved into place), or None when no media row names
    the content any more."""
    media_store.lock_content(cur, sha)
    if not media_store.content_in_use(cur, sha):
        return None
    if made is not None and final is not None:
        files.place(made, final)
        thumb = replace(thumb, size=final.stat().st_size)
    media_store.insert_thumbnail(cur, sha, thumb, now)
    return thumb


def _forget_content(cur: Cursor, files: MediaFiles, sha: str) -> None:
    """Remove the content's file and thumbnails if no media row names it any more."""
    media_store.lock_content(cur, sha)
    if media_store.forget_content(cur, sha):
        files.remove(sha)


def _expired(row: MediaRow, now: int) -> bool:
    return row.uploaded_ts is None and row.unused_expires_ts is not None and row.unused_expires_ts <= now
