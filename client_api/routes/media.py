"""The content repository: uploads (`/_matrix/media/v3/upload`, `/_matrix/media/v1/create`),
authenticated downloads, thumbnails, config and URL previews under
`/_matrix/client/v1/media/`, and the deprecated unauthenticated `/_matrix/media/v3`
download and thumbnail routes (media of users without a tenant only; `media.
legacy_unauthenticated_media` turns them off)."""
from __future__ import annotations

from client_api.http import Req, Router, StreamedBody
from client_api.media_serving import FileResponse, disposition
from homeserver.errors import MatrixError, not_found
from homeserver.media.thumbnails import EXTENSIONS

CLIENT_MEDIA = "/_matrix/client/v1/media"
LEGACY_MEDIA = "/_matrix/media/(?:v3|r0)"

UPLOAD_BODY = StreamedBody(
    limit=lambda hs: hs.config.media.max_upload_bytes,
    open_sink=lambda hs, producer: hs.media.open_upload_sink(producer),
)


async def _check_media_rate(req: Req) -> None:
    await req.hs.ratelimiter.check_user(req, "rc_media_create", req.hs.config.rc_media_create)


def _upload_params(req: Req) -> tuple[str, str | None]:
    header = req.headers.getRawHeaders(b"content-type")
    value = header[0].decode("latin-1") if header else None
    return req.hs.media.check_upload(value, req.query("filename"))


async def upload(req: Req):
    await _check_media_rate(req)
    content_type, name = _upload_params(req)
    media_id = await req.hs.media.upload(req.user_id, req.upload, content_type, name)
    return {"content_uri": req.hs.media.mxc(media_id)}


async def upload_to(req: Req, server_name: str, media_id: str):
    content_type, name = _upload_params(req)
    await req.hs.media.upload_to(req.user_id, server_name, media_id, req.upload, content_type, name)
    return {}


async def create(req: Req):
    await _check_media_rate(req)
    media_id, expires = await req.hs.media.create(req.user_id)
    return {"content_uri": req.hs.media.mxc(media_id), "unused_expires_at": expires}


async def config(req: Req):
    return {"m.upload.size": req.hs.config.media.max_upload_bytes}


async def _download(req: Req, server_name: str, media_id: str, file_name: str | None, asker: str | None):
    repo = req.hs.media
    row = await repo.get_visible(server_name, media_id, asker, req.query_int("timeout_ms"))
    served = await repo.content(row)
    name = file_name if file_name is not None else row.upload_name
    return FileResponse(served.path, served.size, served.content_type,
                        disposition(served.content_type, name), repo.pool)


async def _thumbnail(req: Req, server_name: str, media_id: str, asker: str | None):
    width, height = _dimension(req, "width"), _dimension(req, "height")
    method = req.query("method", "scale")
    if method not in ("crop", "scale"):
        raise MatrixError(400, "M_INVALID_PARAM", "method must be crop or scale")
    animated = req.query("animated", "false")
    if animated not in ("true", "false"):
        raise MatrixError(400, "M_INVALID_PARAM", "animated must be true or false")
    repo = req.hs.media
    row = await repo.get_visible(server_name, media_id, asker, req.query_int("timeout_ms"))
    served = await repo.thumbnail(row, width, height, method, animated == "true")
    name = f"thumbnail.{EXTENSIONS.get(served.content_type, 'png')}"
    return FileResponse(served.path, served.size, served.content_type,
                        disposition(served.content_type, name, force_inline=True), repo.pool)


def _dimension(req: Req, name: str) -> int:
    if req.query(name) is None:
        raise MatrixError(400, "M_MISSING_PARAM", f"query parameter {name} is required")
    value = req.query_int(name)
    assert value is not None
    if value < 1:
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be a positive integer")
    return value


async def preview_url(req: Req):
    previews = req.hs.url_previews
    if previews is None:
        raise MatrixError(404, "M_UNRECOGNIZED", "URL previews are not enabled on this server")
    url = req.query("url")
    if not url:
        raise MatrixError(400, "M_MISSING_PARAM", "query parameter url is required")
    req.query_int("ts")  # accepted (must be an integer); the newest preview is served
    return await previews.preview(url, req.user_id)


# --- the authenticated routes ---------------------------------------------------------------

async def download(req: Req, server_name: str, media_id: str):
    return await _download(req, server_name, media_id, None, req.user_id)


async def download_named(req: Req, server_name: str, media_id: str, file_name: str):
    return await _download(req, server_name, media_id, file_name, req.user_id)


async def thumbnail(req: Req, server_name: str, media_id: str):
    return await _thumbnail(req, server_name, media_id, req.user_id)


# --- the deprecated routes: no asker, so only media of users without a tenant -------------

def _legacy_enabled(req: Req) -> None:
    if not req.hs.config.media.legacy_unauthenticated_media:
        raise not_found("unauthenticated media access is turned off; use /_matrix/client/v1/media")


async def legacy_download(req: Req, server_name: str, media_id: str):
    _legacy_enabled(req)
    return await _download(req, server_name, media_id, None, None)


async def legacy_download_named(req: Req, server_name: str, media_id: str, file_name: str):
    _legacy_enabled(req)
    return await _download(req, server_name, media_id, file_name, None)


async def legacy_thumbnail(req: Req, server_name: str, media_id: str):
    _legacy_enabled(req)
    return await _thumbnail(req, server_name, media_id, None)


async def legacy_config(req: Req):
    _legacy_enabled(req)
    return await config(req)


async def legacy_preview_url(req: Req):
    _legacy_enabled(req)
    return await preview_url(req)


def register(router: Router) -> None:
    router.add("POST", LEGACY_MEDIA + "/upload", upload, body=UPLOAD_BODY)
    router.add("PUT", LEGACY_MEDIA + "/upload/{server_name}/{media_id}", upload_to, body=UPLOAD_BODY)
    router.add("POST", "/_matrix/media/v1/create", create)
    router.add("GET", CLIENT_MEDIA + "/config", config)
    router.add("GET", CLIENT_MEDIA + "/download/{server_name}/{media_id}", download)
    router.add("GET", CLIENT_MEDIA + "/download/{server_name}/{media_id}/{file_name}", download_named)
    router.add("GET", CLIENT_MEDIA + "/thumbnail/{server_name}/{media_id}", thumbnail)
    router.add("GET", CLIENT_MEDIA + "/preview_url", preview_url)
    router.add("GET", LEGACY_MEDIA + "/config", legacy_config)
    router.add("GET", LEGACY_MEDIA + "/download/{server_name}/{media_id}", legacy_download, auth=False)
    router.add("GET", LEGACY_MEDIA + "/download/{server_name}/{media_id}/{file_name}",
               legacy_download_named, auth=False)
    router.add("GET", LEGACY_MEDIA + "/thumbnail/{server_name}/{media_id}", legacy_thumbnail, auth=False)
    router.add("GET", LEGACY_MEDIA + "/preview_url", legacy_preview_url)
