"""Canonical JSON (the spec's appendix): sorted keys, no insignificant whitespace, UTF-8,
integers only within [-(2**53)+1, (2**53)-1]. Used for hashing and signing, never for
plain responses (those use the fast encoder in `homeserver.json_encoding`)."""
from __future__ import annotations

import base64
import json
from typing import Any

MAX_SAFE_INT = 2**53 - 1


class CanonicalJsonError(ValueError):
    """The value cannot be represented as canonical JSON (float, huge int, non-str key...)."""


def _check(value: Any) -> None:
    # Iterative walk: a deeply nested body must not blow Python's recursion limit.
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, bool) or v is None or isinstance(v, str):
            continue
        if isinstance(v, int):
            if not -MAX_SAFE_INT <= v <= MAX_SAFE_INT:
                raise CanonicalJsonError(f"integer {v} out of range for canonical JSON")
        elif isinstance(v, float):
            raise CanonicalJsonError("floats are not allowed in canonical JSON")
        elif isinstance(v, dict):
            for k, item in v.items():
                if not isinstance(k, str):
                    raise CanonicalJsonError("object keys must be strings")
                stack.append(item)
        elif isinstance(v, (list, tuple)):
            stack.extend(v)
        else:
            raise CanonicalJsonError(f"unsupported type {type(v).__name__}")


def encode_canonical_json(value: Any) -> bytes:
    _check(value)
    return json.dumps(
        value, ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False
    ).encode("utf-8")


def unpadded_b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def unpadded_urlsafe_b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def decode_unpadded_b64(text: str) -> bytes:
    text = text.replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4))
