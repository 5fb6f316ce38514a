"""Download links for files shared in bridged rooms, handed to the ERP (webhook, history).

A link is a capability: `<bridge_url>/_erp/v1/media/<tenant>/<server>/<media_id>?exp=&sig=`,
where `sig` is an HMAC-SHA256 (keyed from the ERP API token) over the tenant, the media
and the expiry. It needs no bearer token, so the ERP can hand it to a browser, and it
works only until `exp` and only for that tenant: the bridge fetches the file from the
homeserver as that tenant's bot, so the homeserver's tenant walls apply as well.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import time
from urllib.parse import quote

MXC = re.compile(r"mxc://([A-Za-z0-9.:\[\]-]{1,255})/([A-Za-z0-9_-]{1,255})")


class MediaLinks:
    def __init__(self, base_url: str, api_token: str, ttl_s: int) -> None:
        self.base_url = base_url.rstrip("/")
        # A key of its own, derived, so a link never reveals anything about the API token.
        self._key = hmac.new(api_token.encode(), b"erp-bridge media links", hashlib.sha256).digest()
        self.ttl_s = ttl_s

    def _sig(self, tenant_id: str, server: str, media_id: str, exp: int) -> str:
        msg = f"{tenant_id}\0{server}\0{media_id}\0{exp}".encode()
        return hmac.new(self._key, msg, hashlib.sha256).hexdigest()

    def link(self, tenant_id: str, mxc: str, now: float | None = None) -> tuple[str, int] | None:
        """(URL, expiry in ms since the epoch) for an mxc URI; None if it is not one."""
        m = MXC.fullmatch(mxc)
        if not m:
            return None
        server, media_id = m.groups()
        exp = int((time.time() if now is None else now) + self.ttl_s)
        sig = self._sig(tenant_id, server, media_id, exp)
        url = (f"{self.base_url}/_erp/v1/media/{quote(tenant_id, safe='')}/{quote(server, safe='')}/"
               f"{media_id}?exp={exp}&sig={sig}")
        return url, exp * 1000

    def check(self, tenant_id: str, server: str, media_id: str, exp: str | None, sig: str | None,
              now: float | None = None) -> bool:
        if not exp or not sig or not exp.isdigit() or len(exp) > 12:
            return False
        if int(exp) < (time.time() if now is None else now):
            return False
        return hmac.compare_digest(self._sig(tenant_id, server, media_id, int(exp)), sig)
