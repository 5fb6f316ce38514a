"""OpenGraph data from an HTML page, for URL previews. The page is parsed as data with the
standard library's tokenizer: nothing is rendered, run or fetched here, and only short
plain-text values come out."""
from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

MAX_VALUE = 1000        # characters kept of any one value
MAX_DESCRIPTION = 500
MAX_KEYS = 50
_CHARSET_IN_TYPE = re.compile(r"charset\s*=\s*[\"']?([A-Za-z0-9._:-]+)", re.I)
_META_CHARSET = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?([A-Za-z0-9._:-]+)", re.I)
_SPACE = re.compile(r"\s+")


def _clean(text: str, limit: int = MAX_VALUE) -> str:
    return _SPACE.sub(" ", text).strip()[:limit]


class _OgParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.og: dict[str, str] = {}
        self.title: str | None = None
        self.description: str | None = None
        self._in_title = False
        self._title_parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title" and self.title is None:
            self._in_title = True
        elif tag == "meta":
            a = {k.lower(): (v or "") for k, v in attrs}
            key = (a.get("property") or a.get("name") or "").strip().lower()
            content = a.get("content")
            if content is None or not key:
                return
            if key.startswith("og:") and key not in self.og and len(self.og) < MAX_KEYS:
                self.og[key] = _clean(content)
            elif key == "description" and self.description is None:
                self.description = _clean(content, MAX_DESCRIPTION)

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self._in_title:
            self._in_title = False
            self.title = _clean("".join(self._title_parts))

    def handle_data(self, data: str) -> None:
        if self._in_title and sum(map(len, self._title_parts)) < MAX_VALUE:
            self._title_parts.append(data)


def decode_html(body: bytes, content_type: str | None) -> str:
    """The page as text: the charset from Content-Type, else from a <meta> tag near the
    top, else UTF-8; undecodable bytes become U+FFFD."""
    charset = None
    if content_type:
        m = _CHARSET_IN_TYPE.search(content_type)
        charset = m.group(1) if m else None
    if charset is None:
        m = _META_CHARSET.search(body[:4096])
        charset = m.group(1).decode("ascii") if m else None
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:  # an unknown charset name
        return body.decode("utf-8", errors="replace")


def parse_html(body: bytes, content_type: str | None, page_url: str) -> dict[str, str]:
    """og:* values, with og:title / og:description filled from <title> and the meta
    description when the page has no OpenGraph ones; og:image made absolute (http/https)."""
    parser = _OgParser()
    try:
        parser.feed(decode_html(body, content_type))
        parser.close()
    except Exception:  # the tokenizer is forgiving; whatever was read before a failure counts
        pass
    og = dict(parser.og)
    if "og:title" not in og and parser.title:
        og["og:title"] = parser.title
    if "og:description" not in og and parser.description:
        og["og:description"] = parser.description
    if "og:description" in og:
        og["og:description"] = og["og:description"][:MAX_DESCRIPTION]
    image = og.pop("og:image", None) or og.pop("og:image:url", None) or og.pop("og:image:secure_url", None)
    for key in ("og:image:url", "og:image:secure_url"):
        og.pop(key, None)
    if image:
        absolute = urljoin(page_url, image)
        if urlsplit(absolute).scheme in ("http", "https"):
            og["og:image"] = absolute
    return og
