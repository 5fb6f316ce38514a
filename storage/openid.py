"""OpenID tokens for widgets: stored as SHA-256 hashes with an expiry."""
from __future__ import annotations

from storage.database import Cursor


def add_token(cur: Cursor, token_hash: bytes, user_id: str, expires_ts: int, now_ms: int) -> None:
    cur.execute("DELETE FROM openid_tokens WHERE expires_ts < %s", (now_ms,))  # keep the table small
    cur.execute("INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES (%s, %s, %s)",
                (token_hash, user_id, expires_ts))


def user_of_token(cur: Cursor, token_hash: bytes, now_ms: int) -> str | None:
    """The token's user while the token is valid and the account active."""
    cur.execute("SELECT t.user_id FROM openid_tokens t JOIN users u USING (user_id)"
                " WHERE t.token_hash = %s AND t.expires_ts >= %s AND NOT u.deactivated",
                (token_hash, now_ms))
    row = cur.fetchone()
    return row[0] if row else None
