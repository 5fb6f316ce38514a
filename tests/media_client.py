"""Uploading and fetching media over raw HTTP in tests: uploads through the deprecated
upload route (which every client uses), downloads with their headers and bytes, and test
images."""
from __future__ import annotations

import http.client
import io
import json
import urllib.parse

from PIL import Image

from tests.server_harness import Http

V1 = "/_matrix/client/v1/media"
LEGACY = "/_matrix/media/v3"
SERVER_NAME = "test.local"


def raw(method: str, url: str, body: bytes | None = None, headers: dict | None = None,
        token: str | None = None) -> tuple[int, dict, bytes]:
    """(status, headers with lowercase names, body) of one request over http.client."""
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    hdrs = dict(headers or {})
    if token:
        hdrs["Authorization"] = f"Bearer {token}"
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    conn.request(method, path, body=body, headers=hdrs)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data


def upload(user: Http, data: bytes, content_type: str | None = "application/octet-stream",
           filename: str | None = None) -> tuple[int, dict]:
    q = f"?filename={urllib.parse.quote(filename)}" if filename is not None else ""
    headers = {"Content-Type": content_type} if content_type is not None else {}
    status, _, body = raw("POST", f"{user.base_url}{LEGACY}/upload{q}", data, headers, user.token)
    return status, json.loads(body)


def upload_ok(user: Http, data: bytes, content_type: str = "application/octet-stream",
              filename: str | None = None) -> str:
    status, body = upload(user, data, content_type, filename)
    assert status == 200, body
    assert body["content_uri"].startswith(f"mxc://{SERVER_NAME}/")
    return body["content_uri"].rsplit("/", 1)[1]


def get(user: Http | None, path: str, headers: dict | None = None, base: str | None = None):
    base_url = base or (user.base_url if user else None)
    return raw("GET", base_url + path, headers=headers, token=user.token if user else None)


def image_bytes(size=(1000, 600), fmt="PNG", mode="RGB") -> bytes:
    im = Image.new(mode, size)
    px = im.load()
    for x in range(0, size[0], 7):  # some structure, so encoders cannot collapse it
        for y in range(0, size[1], 5):
            px[x, y] = (x % 256, y % 256, (x * y) % 256) if mode == "RGB" else px[x, y]
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()

