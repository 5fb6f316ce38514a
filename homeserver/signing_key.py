"""The server's ed25519 signing key: generated on first start, kept in the data directory."""
from __future__ import annotations

import os
from pathlib import Path

from signedjson.key import (
    SigningKey,
    decode_signing_key_base64,
    encode_signing_key_base64,
    generate_signing_key,
)


def load_or_create_signing_key(path: Path) -> SigningKey:
    """File format is Synapse's: one line `ed25519 <version> <base64 seed>`."""
    if path.exists():
        parts = path.read_text().split()
        if len(parts) != 3 or parts[0] != "ed25519":
            raise ValueError(f"signing key file {path} is not 'ed25519 <version> <key>'")
        return decode_signing_key_base64(parts[0], parts[1], parts[2])
    key = generate_signing_key("a_" + os.urandom(3).hex())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"ed25519 {key.version} {encode_signing_key_base64(key)}\n")
    os.replace(tmp, path)
    return key


def key_id(key: SigningKey) -> str:
    return f"ed25519:{key.version}"
