"""register-user: create a user straight in the database (works with the server running
or stopped, since the embedded Postgres is shared by both)."""
from __future__ import annotations

import time

import bcrypt

from homeserver.config import Config
from homeserver.ids import LOCALPART_RE, split_id
from storage import accounts as accounts_store
from storage.database import Database
from storage.embedded import EmbeddedPostgres
from storage.migrate import apply_migrations


def register_user_offline(config: Config, user: str, password: str, admin: bool) -> str:
    if user.startswith("@"):
        parts = split_id(user, "@")
        if parts is None or parts[1] != config.server_name:
            raise ValueError(f"{user} is not a user of {config.server_name}")
        localpart = parts[0]
    else:
        localpart = user.lower()
    if not LOCALPART_RE.match(localpart):
        raise ValueError("user names may only contain a-z, 0-9, and . _ = - / +")
    user_id = f"@{localpart}:{config.server_name}"
    pw_hash = bcrypt.hashpw(password.encode()[:72], bcrypt.gensalt(config.registration.bcrypt_rounds)).decode()
    embedded = None
    dsn = config.database.dsn
    if dsn is None:
        embedded = EmbeddedPostgres(config.data_dir)
        dsn = embedded.start()
    db = Database(dsn, 1)
    try:
        db.run_sync(apply_migrations)
        created = db.run_sync(accounts_store.create_user, user_id, pw_hash, admin,
                              int(time.time() * 1000), localpart)
        if not created:
            raise ValueError(f"{user_id} already exists")
    finally:
        db.stop()
        if embedded:
            embedded.stop()
    return user_id
