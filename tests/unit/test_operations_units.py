"""Pure pieces of the operations layer: the logged path drops tokens, both log formats
scrub tokens and carry the request id, and docs/metrics.md and the Grafana dashboard
name exactly metrics the server exports."""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from client_api.request_log import loggable_path
from homeserver.logging_setup import REQUEST_ID, JsonFormatter, TextFormatter, _RequestIdFilter

REPO = Path(__file__).resolve().parents[2]
token_chars = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.~", min_size=8,
                      max_size=40)


@given(token=token_chars, before=st.booleans(), after=st.booleans())
def test_loggable_path_never_holds_the_access_token(token, before, after):
    query = "&".join(p for p in (("since=s1_2" if before else ""), f"access_token={token}",
                                 ("timeout=3000" if after else "")) if p)
    logged = loggable_path(f"/_matrix/client/v3/sync?{query}".encode())
    assert token not in logged and "access_token" not in logged
    assert ("since=s1_2" in logged) == before and ("timeout=3000" in logged) == after


def _record(msg: str, *args) -> logging.LogRecord:
    record = logging.LogRecord("homeserver.x", logging.INFO, __file__, 1, msg, args, None)
    _RequestIdFilter().filter(record)
    return record


def test_formats_carry_the_request_id_and_scrub_tokens():
    REQUEST_ID.set("abc123")
    record = _record("calling %s with Bearer %s", "/x?access_token=sekrit-1", "sekrit-2")
    text = TextFormatter().format(record)
    assert "[abc123]" in text and "sekrit" not in text
    data = json.loads(JsonFormatter().format(record))
    assert data["request_id"] == "abc123" and data["logger"] == "homeserver.x" and "sekrit" not in data["msg"]


def test_documented_metrics_are_the_exported_ones():
    source = (REPO / "homeserver" / "metrics.py").read_text()
    defined = set(re.findall(r'"(homeserver_[a-z_]+)"', source))
    doc = (REPO / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"`(homeserver_[a-z_]+)`", doc))
    assert defined == documented
    dashboard = json.loads((REPO / "docs" / "grafana-dashboard.json").read_text())
    used = {re.sub(r"_(bucket|sum|count)$", "", m) for p in dashboard["panels"] for t in p["targets"]
            for m in re.findall(r"homeserver_[a-z_]+", t["expr"])}
    assert used and used <= defined
