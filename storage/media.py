"""Media repository metadata: local media rows, cached thumbnails and URL previews; and
what the media admin API reads and changes (a user's media, the media a room's events
name, quarantine, protection, deletion).

Admin queries take `tenant` and `scoped`: when `scoped` (a tenant admin), only media
whose row carries `tenant` is read or changed; everything else is left alone as if it
did not exist."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

from storage.database import Cursor, execute_values, like_escape

_MEDIA_COLUMNS = ("media_id, user_id, tenant_id, content_type, upload_name, size, sha256, "
                  "created_ts, uploaded_ts, unused_expires_ts, quarantined_by, safe_from_quarantine, "
                  "last_access_ts")
# order_by value of the admin API -> column; ties are broken by media id.
MEDIA_ORDER = {
    "media_id": "media_id", "upload_name": "upload_name", "created_ts": "created_ts",
    "last_access_ts": "last_access_ts", "media_length": "size", "media_type": "content_type",
    "quarantined_by": "quarantined_by", "safe_from_quarantine": "safe_from_quarantine",
}
MXC_RE = re.compile(r"^mxc://([^/]+)/([^/#?]+)")
_ROOM_SCAN_PAGE = 500


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
    quarantined_by: str | None
    safe_from_quarantine: bool
    last_access_ts: int | None

    @property
    def quarantined(self) -> bool:
        return self.quarantined_by is not None


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



# --- the admin API ------------------------------------------------------------------------

def _scope(scoped: bool, tenant: str | None, column: str = "tenant_id") -> tuple[str, list]:
    return (f" AND {column} IS NOT DISTINCT FROM %s", [tenant]) if scoped else ("", [])


def user_media(cur: Cursor, user_id: str, start: int, limit: int, order_by: str, backwards: bool,
               tenant: str | None, scoped: bool) -> tuple[list[MediaRow], int]:
    """A page of the media `user_id` created (uploads and reserved ids), and their count."""
    where, args = _scope(scoped, tenant)
    cur.execute(f"SELECT count(*) FROM local_media WHERE user_id = %s{where}", [user_id, *args])
    total = cur.fetchone()[0]
    direction = "DESC" if backwards else "ASC"
    cur.execute(f"SELECT {_MEDIA_COLUMNS} FROM local_media WHERE user_id = %s{where}"
                f" ORDER BY {MEDIA_ORDER[order_by]} {direction} NULLS LAST, media_id ASC LIMIT %s OFFSET %s",
                [user_id, *args, limit, start])
    return [MediaRow(*r) for r in cur.fetchall()], total


def mxcs_in_room(cur: Cursor, room_id: str) -> list[tuple[str, str]]:
    """(server name, media id) of every mxc URI a room's events name as their `url` or
    `info.thumbnail_url`, newest event first, each once. Encrypted events name none
    the server can read."""
    found: dict[tuple[str, str], None] = {}
    before = None
    while True:
        cur.execute("SELECT stream_ordering, json FROM events WHERE room_id = %s AND json LIKE '%%mxc://%%'"
                    + (" AND stream_ordering < %s" if before is not None else "")
                    + " ORDER BY stream_ordering DESC LIMIT %s",
                    [room_id] + ([before] if before is not None else []) + [_ROOM_SCAN_PAGE])
        rows = cur.fetchall()
        for before, event_json in rows:
            content = json.loads(event_json).get("content")
            if not isinstance(content, dict):
                continue
            info = content.get("info")
            for url in (content.get("url"), info.get("thumbnail_url") if isinstance(info, dict) else None):
                m = MXC_RE.match(url) if isinstance(url, str) else None
                if m:
                    found[(m.group(1), m.group(2))] = None
        if len(rows) < _ROOM_SCAN_PAGE:
            return list(found)


def set_quarantine(cur: Cursor, media_ids: list[str], by: str | None, tenant: str | None,
                   scoped: bool) -> int:
    """Quarantine (`by`: the admin) or release (`by` None) the given media and every other
    media of the same content (same SHA-256), within the scope; media protected from
    quarantine is not quarantined. Returns how many rows changed."""
    where, args = _scope(scoped, tenant)
    safe = " AND NOT safe_from_quarantine" if by is not None else ""
    cur.execute(f"SELECT media_id, sha256 FROM local_media WHERE media_id = ANY(%s){where}{safe}",
                [media_ids, *args])
    rows = cur.fetchall()
    ids = [m for m, _ in rows]
    hashes = list({h for _, h in rows if h})
    state = "quarantined_by IS NULL" if by is not None else "quarantined_by IS NOT NULL"
    cur.execute(f"UPDATE local_media SET quarantined_by = %s WHERE (media_id = ANY(%s) OR sha256 = ANY(%s))"
                f" AND {state}{where}{safe}", [by, ids, hashes, *args])
    return cur.rowcount


def user_media_ids(cur: Cursor, user_id: str, tenant: str | None, scoped: bool) -> list[str]:
    where, args = _scope(scoped, tenant)
    cur.execute(f"SELECT media_id FROM local_media WHERE user_id = %s{where}", [user_id, *args])
    return [r[0] for r in cur.fetchall()]


def scoped_media_ids(cur: Cursor, media_ids: list[str], tenant: str | None, scoped: bool) -> list[str]:
    """Those of `media_ids` that exist within the scope."""
    where, args = _scope(scoped, tenant)
    cur.execute(f"SELECT media_id FROM local_media WHERE media_id = ANY(%s){where}", [media_ids, *args])
    return [r[0] for r in cur.fetchall()]


def set_safe(cur: Cursor, media_id: str, safe: bool, tenant: str | None, scoped: bool) -> bool:
    """Protect media from quarantine (or not); False if there is no such media in scope."""
    where, args = _scope(scoped, tenant)
    cur.execute(f"UPDATE local_media SET safe_from_quarantine = %s WHERE media_id = %s{where}",
                [safe, media_id, *args])
    return cur.rowcount == 1


def old_media_ids(cur: Cursor, before_ts: int, size_gt: int, keep_profiles: bool, mxc_prefix: str,
                  tenant: str | None, scoped: bool) -> list[str]:
    """Uploaded media last downloaded (or, never downloaded, uploaded) before `before_ts`
    and larger than `size_gt` bytes; never quarantined or protected media. With
    `keep_profiles`, not media that is a user's avatar, a member's avatar in a room, or a
    room's current avatar (`mxc_prefix`: `mxc://<our server>/`)."""
    where, args = _scope(scoped, tenant)
    keep = ""
    if keep_profiles:
        keep = (" AND %s || media_id NOT IN ("
                "SELECT avatar_url FROM users WHERE avatar_url LIKE %s"
                " UNION SELECT avatar_url FROM room_memberships WHERE avatar_url LIKE %s"
                " UNION SELECT (e.json::jsonb) -> 'content' ->> 'url' FROM current_state c"
                " JOIN events e ON e.event_id = c.event_id WHERE c.type = 'm.room.avatar' AND c.state_key = '')")
        like = like_escape(mxc_prefix) + "%"
        args = [mxc_prefix, like, like, *args]
    cur.execute("SELECT media_id FROM local_media WHERE uploaded_ts IS NOT NULL"
                " AND COALESCE(last_access_ts, uploaded_ts) < %s AND size > %s"
                " AND quarantined_by IS NULL AND NOT safe_from_quarantine"
                f"{keep}{where}", [before_ts, size_gt, *args])
    return [r[0] for r in cur.fetchall()]


def delete_media(cur: Cursor, media_ids: list[str], mxc_prefix: str) -> tuple[list[str], list[str]]:
    """Delete the rows of `media_ids`, and cached URL previews whose image was one of
    them: (the ids deleted, the SHA-256s their rows named)."""
    cur.execute("DELETE FROM local_media WHERE media_id = ANY(%s) RETURNING media_id, sha256", (media_ids,))
    rows = cur.fetchall()
    deleted = [m for m, _ in rows]
    if deleted:
        cur.execute("DELETE FROM url_previews WHERE og LIKE ANY(%s)",
                    ([f'%"{like_escape(mxc_prefix + m)}"%' for m in deleted],))
    return deleted, sorted({h for _, h in rows if h})


def lock_content(cur: Cursor, sha256: str) -> None:
    """Hold, until the transaction ends, the lock every process takes to place the file of
    some content, to write a row naming it, or to decide to remove it."""
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", ("media-content:" + sha256,))


def content_in_use(cur: Cursor, sha256: str) -> bool:
    cur.execute("SELECT 1 FROM local_media WHERE sha256 = %s LIMIT 1", (sha256,))
    return cur.fetchone() is not None


def forget_content(cur: Cursor, sha256: str) -> bool:
    """Drop the thumbnail rows of content no media row names any more; False (and
    nothing dropped) while a row still names it."""
    if content_in_use(cur, sha256):
        return False
    cur.execute("DELETE FROM media_thumbnails WHERE sha256 = %s", (sha256,))
    return True


def note_accesses(cur: Cursor, accessed: dict[str, int]) -> None:
    execute_values(cur, "UPDATE local_media m SET last_access_ts = GREATEST(m.last_access_ts, v.ts)"
                        " FROM (VALUES %s) AS v(media_id, ts) WHERE m.media_id = v.media_id",
                   list(accessed.items()))
