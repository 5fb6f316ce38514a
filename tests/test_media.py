"""The media repository against a real server: uploads with matrix-nio and matrix-js-sdk,
authenticated and legacy downloads, thumbnails (sizes checked with Pillow), streamed
bodies with early 413s that do not grow the server's memory, the async create/upload
flow, ranges, safe-serving headers, tenant walls, URL previews and bad input."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import http.client
import io
import json
import socket
import subprocess
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import aiohttp
import pytest
from nio import AsyncClient, LoginResponse, ResizingMethod, UploadResponse
from PIL import Image

from bench.procstats import rss_mib
from tests.media_client import LEGACY, SERVER_NAME, V1, get, image_bytes, raw, upload, upload_ok
from tests.server_harness import Http, ServerProcess
from tests.tenant_world import running_world

MiB = 1024 * 1024

ALLOWED_TYPES = '["image/*", "text/*", "application/octet-stream", "application/json", "video/*", "audio/*"]'


def _world(data_dir, media_config: str, tenants: dict[str, str | None]):
    """A server with `media_config` and users in `tenants`; yields (server, users)."""
    with running_world(data_dir, extra_config="media:\n" + media_config) as w:
        yield w.srv, {name: w.user(name, tenant) for name, tenant in tenants.items()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """URL previews on, with loopback whitelisted so a local page can be previewed; an
    upload allowlist; the default 50 MiB upload limit."""
    yield from _world(tmp_path_factory.mktemp("media"), (
        f"  allowed_content_types: {ALLOWED_TYPES}\n"
        "  url_preview:\n    enabled: true\n    ip_range_whitelist: ['127.0.0.0/8']\n"),
        {"alice": "acme", "carol": "acme", "bob": "globex", "dave": None, "erin": None})


@pytest.fixture(scope="module")
def tight(tmp_path_factory):
    """A 1 MiB upload limit, previews on with the default address ranges, the deprecated
    unauthenticated routes turned off, reserved media ids that expire after a second, and
    thumbnails only of images up to 10000 pixels."""
    yield from _world(tmp_path_factory.mktemp("media-tight"), (
        "  max_upload_bytes: 1048576\n  legacy_unauthenticated_media: false\n"
        "  unused_expiration_ms: 1000\n  max_image_pixels: 10000\n"
        "  url_preview:\n    enabled: true\n"), {"tina": None})


# --- helpers ---------------------------------------------------------------------------------

def animated_gif(size=(300, 200), frames=3) -> bytes:
    images = [Image.new("RGB", size, (80 * i + 40, 20, 200 - 60 * i)) for i in range(frames)]
    buf = io.BytesIO()
    images[0].save(buf, "GIF", save_all=True, append_images=images[1:], duration=100, loop=0)
    return buf.getvalue()


def open_image(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def run(coro):
    return asyncio.run(coro)


# --- real clients ----------------------------------------------------------------------------

def test_nio_upload_download_and_thumbnails(world):
    srv, users = world
    dave = users["dave"]
    png = image_bytes((1000, 600))
    gif = animated_gif()

    async def go():
        client = AsyncClient(srv.base_url, dave.user_id)
        try:
            assert isinstance(await client.login("secret-pw"), LoginResponse)
            resp, _ = await client.upload(io.BytesIO(png), "image/png", "photo.png", filesize=len(png))
            assert isinstance(resp, UploadResponse), resp
            gif_resp, _ = await client.upload(io.BytesIO(gif), "image/gif", "anim.gif", filesize=len(gif))
            assert isinstance(gif_resp, UploadResponse), gif_resp
            down = await client.download(mxc=resp.content_uri)
            media_id = resp.content_uri.rsplit("/", 1)[1]
            crop = await client.thumbnail(SERVER_NAME, media_id, 96, 96, ResizingMethod.crop)
            scale = await client.thumbnail(SERVER_NAME, media_id, 320, 240, ResizingMethod.scale)
            gif_id = gif_resp.content_uri.rsplit("/", 1)[1]
            first = await client.thumbnail(SERVER_NAME, gif_id, 96, 96, ResizingMethod.crop)
            return resp.content_uri, down, crop, scale, first
        finally:
            await client.close()

    mxc, down, crop, scale, first = run(go())
    assert down.body == png, "the authenticated download is not byte-identical"
    assert down.content_type == "image/png" and down.filename == "photo.png"
    # The deprecated unauthenticated route serves it too (dave has no tenant).
    status, headers, body = get(None, f"{LEGACY}/download/{SERVER_NAME}/{mxc.rsplit('/', 1)[1]}",
                                base=srv.base_url)
    assert status == 200 and body == png
    # crop: exactly the configured 96x96; scale: within 320x240 keeping 5:3.
    assert crop.content_type == "image/png" and open_image(crop.body).size == (96, 96)
    assert open_image(scale.body).size == (320, 192)
    # An animated GIF's static thumbnail is its first frame.
    frame = open_image(first.body)
    assert first.content_type == "image/png" and frame.size == (96, 96)
    assert getattr(frame, "n_frames", 1) == 1
    r, g, b = frame.convert("RGB").getpixel((48, 48))
    assert abs(r - 40) < 16 and abs(b - 200) < 16, (r, g, b)  # the first frame's colour


def test_js_sdk_upload_and_authenticated_download(world, tmp_path):
    from tests.test_js_sdk import _ensure_npm_deps

    node = _ensure_npm_deps()
    srv, users = world
    jpeg = image_bytes((640, 480), "JPEG")
    config = {"baseUrl": srv.base_url, "user": "erin", "password": "secret-pw",
              "fileBase64": base64.b64encode(jpeg).decode(), "contentType": "image/jpeg",
              "fileName": "été.jpg", "thumbWidth": 64, "thumbHeight": 64, "thumbMethod": "crop"}
    proc = subprocess.run([str(node), str(Path(__file__).parent / "js" / "media_check.mjs"), json.dumps(config)],
                          cwd=Path(__file__).parent / "js", capture_output=True, text=True, timeout=120)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"no RESULT:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    result = json.loads(lines[-1][len("RESULT "):])
    assert proc.returncode == 0 and result["ok"], result.get("error")
    # The SDK sees authenticated media offered, and built /_matrix/client/v1/media URLs.
    assert result["authMediaFlag"] is True
    assert result["mediaConfig"]["m.upload.size"] == 50 * MiB
    assert "/_matrix/client/v1/media/download/" in result["downloadUrl"]
    assert "/_matrix/client/v1/media/thumbnail/" in result["thumbnailUrl"]
    download = result["download"]
    assert download["status"] == 200
    assert base64.b64decode(download["base64"]) == jpeg
    assert download["contentType"] == "image/jpeg"
    assert download["disposition"] == "inline; filename*=utf-8''%C3%A9t%C3%A9.jpg"
    # erin has no tenant, so the unauthenticated legacy URL serves the same bytes.
    assert "/_matrix/media/v3/download/" in result["legacyUrl"]
    assert result["legacy"]["status"] == 200 and base64.b64decode(result["legacy"]["base64"]) == jpeg
    thumb = result["thumbnail"]
    assert thumb["status"] == 200 and thumb["contentType"] == "image/jpeg"
    assert open_image(base64.b64decode(thumb["base64"])).size == (96, 96)  # smallest crop >= 64


# --- size limits and memory ------------------------------------------------------------------

def _rss(srv: ServerProcess) -> float:
    return rss_mib(srv.proc.pid)


def _files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def _tmp(srv: ServerProcess) -> Path:
    """Where the (single, so `main`) process receives uploads."""
    return srv.data_dir / "media" / "tmp" / "main"


def _wait_empty(directory: Path, timeout: float = 5) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not any(directory.iterdir()):
            return True
        time.sleep(0.05)
    return False


def _declare_and_read(srv: ServerProcess, token: str, path: str, declared: int,
                      send_after: int = 0) -> tuple[bytes, float]:
    """Send only the headers of a request declaring a `declared`-byte body (then
    `send_after` bytes of it); return the response bytes and how long they took."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall((f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
                   f"Content-Type: application/octet-stream\r\nContent-Length: {declared}\r\n\r\n").encode())
        t0 = time.monotonic()
        if send_after:
            try:
                s.sendall(b"\0" * send_after)
            except OSError:
                pass
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < 20:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data, time.monotonic() - t0


def test_declared_oversized_upload_is_refused_before_the_body(tight):
    srv, users = tight
    before = _rss(srv)
    data, elapsed = _declare_and_read(srv, users["tina"].token, f"{LEGACY}/upload", 200 * MiB)
    assert data.startswith(b"HTTP/1.1 413"), data[:200]
    assert b'"errcode":"M_TOO_LARGE"' in data
    assert elapsed < 2, "the 413 did not come before the body"
    # The body that does arrive after the answer is dropped, never stored or buffered.
    data, _ = _declare_and_read(srv, users["tina"].token, f"{LEGACY}/upload", 200 * MiB, send_after=8 * MiB)
    assert data.startswith(b"HTTP/1.1 413")
    assert _rss(srv) - before < 8, f"RSS grew from {before:.1f} to {_rss(srv):.1f} MiB"
    assert _files_under(srv.data_dir / "media") == set()


def test_chunked_upload_over_the_limit_is_cut_off(tight):
    srv, users = tight
    before = _rss(srv)

    async def go():
        async def chunks():
            for _ in range(64):  # 64 MiB against a 1 MiB limit
                yield b"\x01" * MiB
        async with aiohttp.ClientSession() as s:
            async with s.post(srv.base_url + f"{LEGACY}/upload", data=chunks(),
                              headers={"Authorization": f"Bearer {users['tina'].token}"}) as r:
                return r.status, await r.json()

    status, body = run(go())
    assert status == 413 and body["errcode"] == "M_TOO_LARGE"
    assert _wait_empty(_tmp(srv)), "the cut-off upload left a file"
    assert not (srv.data_dir / "media" / "content").exists() or _files_under(srv.data_dir / "media" / "content") == set()
    assert _rss(srv) - before < 8
    # At the limit itself the upload is fine.
    status, body = upload(users["tina"], b"\x02" * MiB)
    assert status == 200, body


def test_interrupted_upload_leaves_nothing(tight):
    srv, users = tight
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall((f"POST {LEGACY}/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {users['tina'].token}"
                   f"\r\nContent-Length: {900 * 1024}\r\n\r\n").encode() + b"\3" * (500 * 1024))
        deadline = time.time() + 5
        while not any(_tmp(srv).iterdir()) and time.time() < deadline:
            time.sleep(0.02)
        assert any(_tmp(srv).iterdir()), "the upload never reached the disk"
    assert _wait_empty(_tmp(srv)), "the interrupted upload left a file"


def test_reserved_ids_expire(tight):
    srv, users = tight
    tina = users["tina"]
    status, created = tina.request("POST", "/_matrix/media/v1/create", {})
    assert status == 200 and created["unused_expires_at"] <= time.time() * 1000 + 1500
    media_id = created["content_uri"].rsplit("/", 1)[1]
    time.sleep(1.2)
    status, _, body = raw("PUT", f"{srv.base_url}{LEGACY}/upload/{SERVER_NAME}/{media_id}", b"late",
                          {"Content-Type": "text/plain"}, tina.token)
    assert status == 404 and json.loads(body)["errcode"] == "M_NOT_FOUND"
    status, _, body = get(tina, f"{V1}/download/{SERVER_NAME}/{media_id}?timeout_ms=100")
    assert status == 404 and json.loads(body)["errcode"] == "M_NOT_FOUND"


def test_oversized_body_on_any_route_is_refused_at_once(tight):
    srv, users = tight
    data, elapsed = _declare_and_read(srv, users["tina"].token, "/_matrix/client/v3/createRoom", 50 * MiB)
    assert data.startswith(b"HTTP/1.1 413") and b"M_TOO_LARGE" in data
    assert elapsed < 2


def test_large_upload_streams_without_growing_memory(world):
    srv, users = world
    size = 40 * MiB
    block = hashlib.sha256(b"seed").digest() * 2048  # 64 KiB
    expected = hashlib.sha256()
    for _ in range(size // len(block)):
        expected.update(block)

    def body():
        for _ in range(size // len(block)):
            yield block

    before = _rss(srv)
    status, _, resp = raw("POST", f"{srv.base_url}{LEGACY}/upload?filename=big.bin", body(),
                          {"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                          users["dave"].token)
    after_upload = _rss(srv)
    assert status == 200, resp
    media_id = json.loads(resp)["content_uri"].rsplit("/", 1)[1]
    # Download it back, hashing as it streams.
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    conn.request("GET", f"{V1}/download/{SERVER_NAME}/{media_id}",
                 headers={"Authorization": f"Bearer {users['dave'].token}"})
    r = conn.getresponse()
    got = hashlib.sha256()
    while chunk := r.read(1 << 20):
        got.update(chunk)
    conn.close()
    after_download = _rss(srv)
    assert r.status == 200 and got.hexdigest() == expected.hexdigest()
    assert int(r.getheader("Content-Length")) == size
    grown = max(after_upload, after_download) - before
    print(f"RSS before {before:.1f}, after upload {after_upload:.1f}, after download {after_download:.1f} MiB")
    assert grown < 16, f"RSS grew by {grown:.1f} MiB for a 40 MiB upload and download"


# --- content types, async uploads, ranges, headers ------------------------------------------

def test_refused_and_malformed_content_types(world):
    _, users = world
    status, body = upload(users["dave"], b"MZ...", "application/x-msdownload")
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, body = upload(users["dave"], b"x", "not a type")
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    # No Content-Type: application/octet-stream, which this server's allowlist admits.
    media_id = upload_ok(users["dave"], b"bytes", content_type=None)
    status, headers, _ = get(users["dave"], f"{V1}/download/{SERVER_NAME}/{media_id}")
    assert status == 200 and headers["content-type"] == "application/octet-stream"


def test_create_then_upload(world):
    srv, users = world
    alice, carol = users["alice"], users["carol"]
    status, created = alice.request("POST", "/_matrix/media/v1/create", {})
    assert status == 200, created
    media_id = created["content_uri"].rsplit("/", 1)[1]
    assert created["unused_expires_at"] > time.time() * 1000 + 3600_000
    url = f"{V1}/download/{SERVER_NAME}/{media_id}"
    # Not uploaded yet: after timeout_ms, 504 M_NOT_YET_UPLOADED.
    t0 = time.monotonic()
    status, _, body = get(carol, url + "?timeout_ms=300")
    assert status == 504 and json.loads(body)["errcode"] == "M_NOT_YET_UPLOADED"
    assert 0.25 < time.monotonic() - t0 < 5
    # Someone else may not fill it in.
    put = f"{srv.base_url}{LEGACY}/upload/{SERVER_NAME}/{media_id}?filename=late.txt"
    status, _, body = raw("PUT", put, b"intruder", {"Content-Type": "text/plain"}, carol.token)
    assert status == 403 and json.loads(body)["errcode"] == "M_FORBIDDEN"
    # A download waiting for the upload gets the content as soon as it lands.
    waiting: dict = {}
    t = threading.Thread(target=lambda: waiting.update(r=get(carol, url + "?timeout_ms=10000")))
    t.start()
    time.sleep(0.5)
    status, _, body = raw("PUT", put, b"finally here", {"Content-Type": "text/plain"}, alice.token)
    assert status == 200 and json.loads(body) == {}
    t.join(15)
    status, headers, body = waiting["r"]
    assert status == 200 and body == b"finally here"
    assert headers["content-disposition"] == 'inline; filename="late.txt"'
    # Once uploaded it cannot be overwritten.
    status, _, body = raw("PUT", put, b"again", {"Content-Type": "text/plain"}, alice.token)
    assert status == 409 and json.loads(body)["errcode"] == "M_CANNOT_OVERWRITE_MEDIA"
    # Unknown ids and other servers' ids are 404.
    for bad in (f"{SERVER_NAME}/nosuchmediaid", f"other.example/{media_id}"):
        status, _, body = raw("PUT", f"{srv.base_url}{LEGACY}/upload/{bad}", b"x", {}, alice.token)
        assert status == 404 and json.loads(body)["errcode"] == "M_NOT_FOUND"


def test_pending_uploads_are_limited(world):
    _, users = world
    bob = users["bob"]
    results = [bob.request("POST", "/_matrix/media/v1/create", {}) for _ in range(6)]
    assert [s for s, _ in results[:5]] == [200] * 5
    status, body = results[5]
    assert status == 429 and body["errcode"] == "M_LIMIT_EXCEEDED"


def test_range_requests(world):
    _, users = world
    dave = users["dave"]
    data = bytes(range(256)) * 40  # 10240 bytes
    media_id = upload_ok(dave, data, "video/mp4", "clip.mp4")
    url = f"{V1}/download/{SERVER_NAME}/{media_id}"
    status, headers, body = get(dave, url, {"Range": "bytes=100-199"})
    assert status == 206 and body == data[100:200]
    assert headers["content-range"] == "bytes 100-199/10240" and headers["content-length"] == "100"
    status, headers, body = get(dave, url, {"Range": "bytes=-16"})
    assert status == 206 and body == data[-16:]
    status, headers, body = get(dave, url, {"Range": "bytes=10000-"})
    assert status == 206 and body == data[10000:]
    status, headers, _ = get(dave, url, {"Range": "bytes=20000-"})
    assert status == 416 and headers["content-range"] == "bytes */10240"
    status, headers, body = get(dave, url, {"Range": "bytes=5-1"})  # invalid: whole file
    assert status == 200 and body == data and headers["accept-ranges"] == "bytes"
    status, headers, body = raw("HEAD", dave.base_url + url, token=dave.token)
    assert status == 200 and body == b"" and headers["content-length"] == "10240"


def test_safe_serving_headers(world):
    _, users = world
    dave = users["dave"]

    def fetch(data: bytes, content_type: str, filename: str | None, suffix: str = ""):
        media_id = upload_ok(dave, data, content_type, filename)
        return get(dave, f"{V1}/download/{SERVER_NAME}/{media_id}{suffix}")

    status, headers, _ = fetch(image_bytes((10, 10)), "image/png", "a.png")
    assert status == 200
    assert headers["content-security-policy"].startswith("sandbox; default-src 'none'; script-src 'none';")
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["cross-origin-resource-policy"] == "cross-origin"
    assert headers["content-disposition"] == 'inline; filename="a.png"'
    assert headers["access-control-allow-origin"] == "*"
    # Types a browser could run as a page are attachments.
    _, headers, _ = fetch(b"<script>alert(1)</script>", "text/html", "x.html")
    assert headers["content-disposition"] == 'attachment; filename="x.html"'
    assert headers["content-type"] == "text/html; charset=utf-8"
    _, headers, _ = fetch(b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml", None)
    assert headers["content-disposition"] == "attachment"
    # Names that are not plain ASCII, or could break the header, are RFC 5987-encoded.
    _, headers, _ = fetch(b"hi", "text/plain", 'ra"port\r\nX-Evil: 1.txt')
    assert headers["content-disposition"] == "inline; filename*=utf-8''ra%22port%0D%0AX-Evil%3A%201.txt"
    assert "x-evil" not in headers
    assert headers["content-type"] == "text/plain; charset=utf-8"
    # The name in the path replaces the uploaded one.
    _, headers, _ = fetch(b"hi", "text/plain", "orig.txt", "/renamed%20file.txt")
    assert headers["content-disposition"] == 'inline; filename="renamed file.txt"'


def test_media_config(world, tight):
    for srv, user, limit in ((world[0], world[1]["dave"], 50 * MiB), (tight[0], tight[1]["tina"], MiB)):
        assert user.request("GET", f"{V1}/config") == (200, {"m.upload.size": limit})
    assert world[1]["dave"].request("GET", f"{LEGACY}/config") == (200, {"m.upload.size": 50 * MiB})
    status, body = Http(world[0].base_url).request("GET", f"{V1}/config")
    assert status == 401 and body["errcode"] == "M_MISSING_TOKEN"
    status, body = Http(world[0].base_url).request("GET", "/_matrix/client/versions")
    assert body["unstable_features"]["org.matrix.msc3916.stable"] is True


def test_legacy_routes_can_be_turned_off(tight):
    srv, users = tight
    tina = users["tina"]
    media_id = upload_ok(tina, image_bytes((50, 50)), "image/png")
    status, _, body = get(None, f"{LEGACY}/download/{SERVER_NAME}/{media_id}", base=srv.base_url)
    assert status == 404 and json.loads(body)["errcode"] == "M_NOT_FOUND"
    status, _, body = get(None, f"{LEGACY}/thumbnail/{SERVER_NAME}/{media_id}?width=32&height=32",
                          base=srv.base_url)
    assert status == 404
    assert get(tina, f"{V1}/download/{SERVER_NAME}/{media_id}")[0] == 200


def test_images_too_large_to_thumbnail(tight):
    _, users = tight
    tina = users["tina"]
    small, big = upload_ok(tina, image_bytes((100, 100)), "image/png"), upload_ok(tina, image_bytes((101, 100)), "image/png")
    status, _, body = get(tina, f"{V1}/thumbnail/{SERVER_NAME}/{small}?width=32&height=32&method=crop")
    assert status == 200 and open_image(body).size == (32, 32)
    status, _, body = get(tina, f"{V1}/thumbnail/{SERVER_NAME}/{big}?width=32&height=32&method=crop")
    assert status == 413 and json.loads(body)["errcode"] == "M_TOO_LARGE"


# --- tenancy ---------------------------------------------------------------------------------

def test_tenant_walls(world):
    srv, users = world
    alice, carol, bob, dave = users["alice"], users["carol"], users["bob"], users["dave"]
    png = image_bytes((200, 100))
    acme_id = upload_ok(alice, png, "image/png", "acme.png")
    plain_id = upload_ok(dave, b"plain", "text/plain")
    thumb_q = "?width=32&height=32&method=crop"

    def answer(user, path):
        status, _, body = get(user, path, base=srv.base_url)
        return status, json.loads(body) if status != 200 else body

    missing = answer(bob, f"{V1}/download/{SERVER_NAME}/NoSuchMediaIdHere")
    assert missing[0] == 404 and missing[1]["errcode"] == "M_NOT_FOUND"
    # The same tenant sees it.
    assert answer(carol, f"{V1}/download/{SERVER_NAME}/{acme_id}") == (200, png)
    assert answer(carol, f"{V1}/thumbnail/{SERVER_NAME}/{acme_id}{thumb_q}")[0] == 200
    # Another tenant, a user without a tenant and the unauthenticated routes see nothing,
    # exactly as for an id that does not exist.
    for user, prefix in ((bob, V1), (dave, V1), (None, LEGACY)):
        for path in (f"/download/{SERVER_NAME}/{acme_id}", f"/download/{SERVER_NAME}/{acme_id}/x.png",
                     f"/thumbnail/{SERVER_NAME}/{acme_id}{thumb_q}"):
            assert answer(user, prefix + path) == missing, (user and user.user_id, prefix, path)
    # Media of users without a tenant is walled off from tenants too.
    assert answer(dave, f"{V1}/download/{SERVER_NAME}/{plain_id}") == (200, b"plain")
    assert answer(None, f"{LEGACY}/download/{SERVER_NAME}/{plain_id}") == (200, b"plain")
    assert answer(alice, f"{V1}/download/{SERVER_NAME}/{plain_id}") == missing
    # A reserved id of another tenant: 404 at once, not a wait for its upload.
    _, created = alice.request("POST", "/_matrix/media/v1/create", {})
    pending = created["content_uri"].rsplit("/", 1)[1]
    t0 = time.monotonic()
    assert answer(bob, f"{V1}/download/{SERVER_NAME}/{pending}?timeout_ms=5000") == missing
    assert time.monotonic() - t0 < 2


# --- URL previews ----------------------------------------------------------------------------

class _Site:
    """A local web site with an OpenGraph page and its image; counts requests."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.logo = image_bytes((64, 48))
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the stdlib's name
                site.hits.append(self.path)
                pages = {
                    "/page.html": ("text/html; charset=utf-8", (
                        "<html><head><title>Fallback title</title>"
                        "<meta property='og:title' content='Quarterly report'>"
                        "<meta property='og:description' content='Numbers &amp; more'>"
                        "<meta property='og:image' content='/logo.png'></head>"
                        "<body><script>alert(1)</script></body></html>").encode()),
                    "/plain.html": ("text/html", b"<title> Just  a title </title>"
                                    b"<meta name='description' content='A description'>"),
                    "/logo.png": ("image/png", site.logo),
                }
                if self.path not in pages:
                    self.send_error(404)
                    return
                ctype, body = pages[self.path]
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def site():
    s = _Site()
    yield s
    s.close()


def _preview(user: Http, url: str, prefix: str = V1):
    return user.request("GET", f"{prefix}/preview_url?url={urllib.parse.quote(url, safe='')}")


def test_preview_url_of_a_local_page_when_whitelisted(world, site):
    srv, users = world
    alice, carol, bob = users["alice"], users["carol"], users["bob"]
    status, og = _preview(alice, f"http://127.0.0.1:{site.port}/page.html")
    assert status == 200, og
    assert og["og:title"] == "Quarterly report" and og["og:description"] == "Numbers & more"
    assert og["og:image"].startswith(f"mxc://{SERVER_NAME}/")
    assert (og["og:image:width"], og["og:image:height"]) == (64, 48)
    assert og["og:image:type"] == "image/png" and og["matrix:image:size"] == len(site.logo)
    image_id = og["og:image"].rsplit("/", 1)[1]
    assert get(carol, f"{V1}/download/{SERVER_NAME}/{image_id}")[2] == site.logo
    assert get(bob, f"{V1}/download/{SERVER_NAME}/{image_id}")[0] == 404
    # Cached: asking again does not fetch again.
    hits = len(site.hits)
    assert _preview(carol, f"http://127.0.0.1:{site.port}/page.html") == (200, og)
    assert len(site.hits) == hits
    # <title> and the meta description stand in for missing OpenGraph tags.
    status, og = _preview(alice, f"http://127.0.0.1:{site.port}/plain.html", LEGACY)
    assert status == 200 and og == {"og:title": "Just a title", "og:description": "A description"}
    status, body = _preview(alice, f"http://127.0.0.1:{site.port}/missing.html")
    assert status == 502 and body["errcode"] == "M_UNKNOWN"


def test_preview_url_refuses_loopback_by_default(tight, site):
    _, users = tight
    tina = users["tina"]
    hits = len(site.hits)
    status, body = _preview(tina, f"http://127.0.0.1:{site.port}/page.html")
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    # A name that resolves to loopback is refused at connection time.
    status, body = _preview(tina, f"http://localhost:{site.port}/page.html")
    assert status == 502 and body["errcode"] == "M_UNKNOWN"
    status, _ = _preview(tina, f"http://[::ffff:127.0.0.1]:{site.port}/page.html")
    assert status == 403
    assert len(site.hits) == hits, "the server connected to a loopback address"
    for bad in ("ftp://example.com/", "not a url", "http://", "http://x:99999/"):
        status, body = _preview(tina, bad)
        assert status == 400 and body["errcode"] == "M_INVALID_PARAM", (bad, body)
    status, body = tina.request("GET", f"{V1}/preview_url")
    assert status == 400 and body["errcode"] == "M_MISSING_PARAM"


def test_preview_url_is_off_by_default(server, http, unique):
    reg = http.register(unique("pv"))
    user = Http(server.base_url, reg["access_token"])
    status, body = _preview(user, "https://example.com/")
    assert status == 404 and body["errcode"] == "M_UNRECOGNIZED"


# --- bad input -------------------------------------------------------------------------------

def test_bad_input_gets_spec_errors_never_500(world):
    srv, users = world
    dave = users["dave"]
    media_id = upload_ok(dave, b"not an image", "text/plain")
    png_id = upload_ok(dave, image_bytes((40, 40)), "image/png")
    broken_id = upload_ok(dave, image_bytes((40, 40))[:60], "image/png")
    cases = [
        (f"{V1}/download/{SERVER_NAME}/..%2F..%2Fetc%2Fpasswd", 404, "M_NOT_FOUND"),
        (f"{V1}/download/bad%20server%2Fname/{media_id}", 404, "M_NOT_FOUND"),
        (f"{V1}/download/remote.example/{media_id}", 404, "M_NOT_FOUND"),
        (f"{V1}/download/{SERVER_NAME}/{'a' * 300}", 404, "M_NOT_FOUND"),
        (f"{V1}/download/{SERVER_NAME}/{media_id}%0A", 404, "M_NOT_FOUND"),
        (f"{V1}/download/{SERVER_NAME}/{media_id}?timeout_ms=soon", 400, "M_INVALID_PARAM"),
        (f"{V1}/thumbnail/{SERVER_NAME}/{png_id}?width=-1&height=32", 400, "M_INVALID_PARAM"),
        (f"{V1}/thumbnail/{SERVER_NAME}/{png_id}?width=0&height=32", 400, "M_INVALID_PARAM"),
        (f"{V1}/thumbnail/{SERVER_NAME}/{png_id}?width=1.5&height=32", 400, "M_INVALID_PARAM"),
        (f"{V1}/thumbnail/{SERVER_NAME}/{png_id}?height=32", 400, "M_MISSING_PARAM"),
        (f"{V1}/thumbnail/{SERVER_NAME}/{png_id}?width=32&height=32&method=stretch", 400, "M_INVALID_PARAM"),
        (f"{V1}/thumbnail/{SERVER_NAME}/{png_id}?width=32&height=32&animated=maybe", 400, "M_INVALID_PARAM"),
        (f"{V1}/thumbnail/{SERVER_NAME}/{media_id}?width=32&height=32", 400, "M_UNKNOWN"),
        (f"{V1}/thumbnail/{SERVER_NAME}/{broken_id}?width=32&height=32", 400, "M_UNKNOWN"),
        (f"{V1}/thumbnail/remote.example/{png_id}?width=32&height=32", 404, "M_NOT_FOUND"),
    ]
    for path, want_status, want_code in cases:
        status, _, body = get(dave, path)
        assert (status, json.loads(body).get("errcode")) == (want_status, want_code), path
    # A file name in the path that ends in a newline cannot break the header.
    status, headers, _ = get(dave, f"{V1}/download/{SERVER_NAME}/{media_id}/evil%0A")
    assert status == 200 and headers["content-disposition"] == "inline; filename*=utf-8''evil%0A"
    # A huge size is answered with the largest configured thumbnail, never enlarged.
    status, _, body = get(dave, f"{V1}/thumbnail/{SERVER_NAME}/{png_id}?width=99999999999&height=5")
    assert status == 200 and open_image(body).size == (40, 40)
    status, body = upload(dave, b"x", "text/plain", "n" * 300)
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM"
    status, body = Http(srv.base_url).request("POST", f"{LEGACY}/upload", raw=b"x")
    assert status == 401 and body["errcode"] == "M_MISSING_TOKEN"
    assert "Traceback" not in srv.log_text() and "unhandled error" not in srv.log_text()
