"""Logging: text or JSON lines on stderr, each record tagged with the id of the HTTP
request it belongs to (a context variable set by the HTTP layer, so every line logged
while serving a request carries it), and a last-resort scrub of access tokens."""
from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time

# The id of the request being served ("-" outside requests). Twisted runs each
# coroutine's steps in the context it started with, and the database pool copies the
# caller's context into its threads, so nested work inherits it.
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

# access_token=... in a query string, Bearer tokens in a header echoed into a message.
_TOKEN_RE = re.compile(r"(access_token=|[Bb]earer\s+|BEARER\s+)[^&\s\"']+")


def scrub(text: str) -> str:
    if "access_token=" not in text and "earer" not in text and "BEARER" not in text:
        return text  # the common case, without the regex
    return _TOKEN_RE.sub(r"\1<redacted>", text)


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (ISO 8601, UTC), level, logger, request_id, msg, and
    the fields of an access line (`record.access`) or an exception's traceback."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "msg": scrub(record.getMessage()),
        }
        access = getattr(record, "access", None)
        if access:
            out.update(access)
        if record.exc_info:
            out["exc"] = scrub(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False, default=str)


def setup_logging(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level))
    logging.getLogger("pgserver").setLevel(logging.WARNING)  # it narrates every pg_ctl call
