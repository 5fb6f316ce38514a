"""Media repository metadata: local media rows, cached thumbnails and URL previews."""
from __future__ import annotations

from dataclasses import dataclass
from storage.database import Cursor

_MEDIA_COLUMNS = ("media_id, user_id, tenant_id, content_type, upload_name, size, sha256, "
                  "created_ts, uploaded_ts, unused_expires_ts, quarantined")


@dataclass(frozen=True)
class MediaRow:
    media_id: str
    user_id: str
    tenant_id: str | None
    content_type: str | None
    upload_name: str | None
    size: int | None
    sha256: str | None
    created_ts: int
    uploaded_ts: int | None
    unused_expires_ts: int | None
    quarantined: bool


@dataclass(frozen=True)
class ThumbnailRow:
    width: int
    height: int
    method: str
    animated: bool
    content_type: str
    size: int
    is_original: bool


def get_media(cur: Cursor, media_id: str) -> MediaRow | None:
    cur.execute(f"SELECT {_MEDIA_COLUMNS} FROM local_media WHERE media_id = %s", (media_id,))
    row = cur.fetchone()
    return MediaRow(*row) if row else None


def insert_uploaded(cur: Cursor, media_id: str, user_id: str, tenant_id: str | None,
                    content_type: str, upload_name: str | None, size: int, sha256: str,
                    now: int) -> None:
    cur.execute(
        "INSERT INTO local_media (media_id, user_id, tenant_id, content_type, upload_name, size,"
        " sha256, created_ts, uploaded_ts) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (media_id, user_id, tenant_id, content_type, upload_name, size, sha256, now, now))


def create_pending(cur: Cursor, media_id: str, user_id: str, tenant_id: str | None, now: int,
                   expires_ts: int, max_pending: int) -> bool:
    """Reserve a media id for a later upload; False when the user already holds
    `max_pending` unexpired reservations. Expired reservations of the user are dropped."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("media-pending:" + user_id,))
    cur.execute("DELETE FROM local_media WHERE user_id = %s AND uploaded_ts IS NULL"
                " AND unused_expires_ts <= %s", (user_id, now))
    cur.execute("SELECT count(*) FROM local_media WHERE user_id = %s AND uploaded_ts IS NULL",
                (user_id,))
    if cur.fetchone()[0] >= max_pending:
        return False
    cur.execute("INSERT INTO local_media (media_id, user_id, tenant_id, created_ts, unused_expires_ts)"
                " VALUES (%s, %s, %s, %s, %s)", (media_id, user_id, tenant_id, now, expires_ts))
    return True


def complete_pending(cur: Cursor, media_id: str, content_type: str, upload_name: str | None,
                     size: int, sha256: str, now: int) -> bool:
    """Fill in a reservation's content; False if it was filled in meanwhile."""
    cur.execute(
        "UPDATE local_media SET content_type = %s, upload_name = %s, size = %s, sha256 = %s,"
        " uploaded_ts = %s, unused_expires_ts = NULL WHERE media_id = %s AND uploaded_ts IS NULL",
        (content_type, upload_name, size, sha256, now, media_id))
    return cur.rowcount == 1


def get_thumbnail(cur: Cursor, sha256: str, width: int, height: int, method: str,
                  animated: bool) -> ThumbnailRow | None:
    cur.execute("SELECT width, height, method, animated, content_type, size, is_original"
                " FROM media_thumbnails WHERE sha256 = %s AND width = %s AND height = %s"
                " AND method = %s AND animated = %s", (sha256, width, height, method, animated))
    row = cur.fetchone()
    return ThumbnailRow(*row) if row else None


def insert_thumbnail(cur: Cursor, sha256: str, thumb: ThumbnailRow, now: int) -> None:
    cur.execute(
        "INSERT INTO media_thumbnails (sha256, width, height, method, animated, content_type, size,"
        " is_original, created_ts) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (sha256, width, height, method, animated) DO UPDATE SET"
        " content_type = EXCLUDED.content_type, size = EXCLUDED.size,"
        " is_original = EXCLUDED.is_original, created_ts = EXCLUDED.created_ts",
        (sha256, thumb.width, thumb.height, thumb.method, thumb.animated, thumb.content_type,
         thumb.size, thumb.is_original, now))


def get_preview(cur: Cursor, url: str, tenant_key: str, not_before: int) -> str | None:
    cur.execute("SELECT og FROM url_previews WHERE url = %s AND tenant_key = %s AND fetched_ts >= %s",
                (url, tenant_key, not_before))
    row = cur.fetchone()
    return row[0] if row else None


def put_preview(cur: Cursor, url: str, tenant_key: str, og_json: str, now: int) -> None:
    cur.execute("INSERT INTO url_previews (url, tenant_key, fetched_ts, og) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (url, tenant_key) DO UPDATE SET fetched_ts = EXCLUDED.fetched_ts,"
                " og = EXCLUDED.og", (url, tenant_key, now, og_json))

