"""Content types of uploads: validating the client's header and the upload allowlist."""
from __future__ import annotations

import fnmatch
import re

DEFAULT_TYPE = "application/octet-stream"
# type/subtype (RFC 9110 tokens), then optional `; name=value` parameters in printable ASCII.
_MEDIA_TYPE = re.compile(r"^([!#$%&'*+.^_`|~0-9A-Za-z-]+/[!#$%&'*+.^_`|~0-9A-Za-z-]+)"
                         r"((?:\s*;\s*[!#$%&'*+.^_`|~0-9A-Za-z-]+=(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+"
                         r"|\"[\x20\x21\x23-\x5b\x5d-\x7e]*\"))*)\s*$")
MAX_LENGTH = 255


def normalize(header: str | None) -> str | None:
    """The upload's content type as stored: `type/subtype` lowercased plus its parameters;
    `application/octet-stream` when absent; None when the header is not a media type."""
    if header is None or not header.strip():
        return DEFAULT_TYPE
    if len(header) > MAX_LENGTH:
        return None
    m = _MEDIA_TYPE.match(header.strip())
    if m is None:
        return None
    params = re.sub(r"\s*;\s*", "; ", m.group(2)).strip()
    return m.group(1).lower() + (params and "; " + params.lstrip("; "))


def base_type(content_type: str) -> str:
    """`text/plain; charset=utf-8` -> `text/plain`."""
    return content_type.split(";", 1)[0].strip().lower()


def is_allowed(content_type: str, patterns: list[str] | None) -> bool:
    if patterns is None:
        return True
    base = base_type(content_type)
    return any(fnmatch.fnmatchcase(base, p.lower()) for p in patterns)
