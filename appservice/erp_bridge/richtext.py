"""Formatted text both ways, with no package beyond the standard library:

- `sanitize_html`: a whitelist sanitizer for the HTML of Matrix messages
  (`formatted_body`) before it reaches the ERP, which may show it in a web page. Tags and
  attributes not on the list go (unknown tags keep their text; script-like ones and
  reply fallbacks lose it too), links keep only http(s)/mailto targets, text is escaped,
  and the result is always balanced.
- `render_markdown`: a small Markdown subset for messages the ERP posts (paragraphs, line
  breaks, headings, lists, quotes, code, bold, italic, strike-through, links). The source
  is escaped first, so HTML written in it stays text; the output is sanitized again.
"""
from __future__ import annotations

import html
import re
from html.parser import HTMLParser

ALLOWED_TAGS = frozenset({
    "a", "b", "strong", "i", "em", "u", "del", "s", "strike", "code", "pre", "p", "br", "hr",
    "blockquote", "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6", "sup", "sub", "span",
    "div", "table", "thead", "tbody", "tr", "th", "td", "caption", "details", "summary",
})
VOID_TAGS = frozenset({"br", "hr"})
# Dropped with everything inside them. mx-reply is the reply fallback (the webhook has
# `in_reply_to` instead).
DROP_CONTENT = frozenset({"script", "style", "mx-reply", "head", "title", "iframe", "object",
                          "embed", "template", "textarea", "select", "noscript", "svg", "math"})
ALLOWED_ATTRS = {
    "a": {"href"},
    "ol": {"start"},
    "code": {"class"},
    "span": {"data-mx-spoiler"},
}
SAFE_SCHEMES = ("http://", "https://", "mailto:")


def _clean_attr(tag: str, name: str, value: str | None) -> str | None:
    if name not in ALLOWED_ATTRS.get(tag, ()):
        return None
    value = value or ""
    if name == "href":
        stripped = "".join(c for c in value if c > " ").lower()
        return value if stripped.startswith(SAFE_SCHEMES) else None
    if name == "start":
        return value if value.isdigit() and len(value) < 10 else None
    if name == "class":
        return value if re.fullmatch(r"language-[A-Za-z0-9_+-]{1,40}", value) else None
    return value


class _Sanitizer(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.stack: list[str] = []
        self.skip: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.skip:
            if tag == self.skip[-1] or tag in DROP_CONTENT:
                self.skip.append(tag)
            return
        if tag in DROP_CONTENT:
            self.skip.append(tag)
            return
        if tag not in ALLOWED_TAGS:
            return
        kept = []
        for name, value in attrs:
            clean = _clean_attr(tag, name, value)
            if clean is not None:
                kept.append(f' {name}="{html.escape(clean, quote=True)}"')
        if tag == "a" and kept:
            kept.append(' rel="noopener noreferrer"')
        self.out.append(f"<{tag}{''.join(kept)}>")
        if tag not in VOID_TAGS:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in VOID_TAGS and not self.skip:
            self.out.append(f"<{tag}>")

    def handle_endtag(self, tag: str) -> None:
        if self.skip:
            if tag == self.skip[-1]:
                self.skip.pop()
            return
        if tag not in self.stack:
            return
        while self.stack:
            open_tag = self.stack.pop()
            self.out.append(f"</{open_tag}>")
            if open_tag == tag:
                break

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.out.append(html.escape(data, quote=False))

    def result(self) -> str:
        self.close()
        while self.stack:
            self.out.append(f"</{self.stack.pop()}>")
        return "".join(self.out)


def sanitize_html(markup: str) -> str:
    s = _Sanitizer()
    s.feed(markup)
    return s.result()


# ---- Markdown subset ----------------------------------------------------------------------

_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_LINK = re.compile(r"\[([^\]\n]+)\]\(([^)\s]+)\)")
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_ITALIC = re.compile(r"(?<![\w*])([*_])(?=\S)(.+?)(?<=\S)\1(?![\w*])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_HEADING = re.compile(r"(#{1,6})\s+(.*)")
_UL = re.compile(r"[-*+]\s+(.*)")
_OL = re.compile(r"(\d{1,9})[.)]\s+(.*)")


def _inline(text: str) -> str:
    """Inline Markdown of one escaped line; code spans are kept verbatim."""
    parts = _CODE_SPAN.split(text)
    out = []
    for i, part in enumerate(parts):
        if i % 2:
            out.append(f"<code>{part}</code>")
            continue

        def link(m: re.Match) -> str:
            target = html.unescape(m.group(2))
            if not target.lower().startswith(SAFE_SCHEMES):
                return m.group(0)
            return f'<a href="{html.escape(target, quote=True)}">{m.group(1)}</a>'

        part = _LINK.sub(link, part)
        part = _BOLD.sub(r"<strong>\2</strong>", part)
        part = _ITALIC.sub(r"<em>\2</em>", part)
        part = _STRIKE.sub(r"<del>\1</del>", part)
        out.append(part)
    return "".join(out)


def render_markdown(source: str) -> str:
    """HTML for the Markdown subset; sanitized."""
    lines = html.escape(source, quote=False).replace("\r\n", "\n").split("\n")
    blocks: list[str] = []
    para: list[str] = []
    i = 0

    def flush() -> None:
        if para:
            blocks.append("<p>" + "<br>".join(_inline(x) for x in para) + "</p>")
            para.clear()

    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            lang = stripped[3:].strip()
            body = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                body.append(lines[i])
                i += 1
            cls = f' class="language-{lang}"' if re.fullmatch(r"[A-Za-z0-9_+-]{1,40}", lang) else ""
            blocks.append(f"<pre><code{cls}>" + "\n".join(body) + "</code></pre>")
            i += 1
            continue
        if not stripped:
            flush()
            i += 1
            continue
        m = _HEADING.fullmatch(stripped)
        if m:
            flush()
            n = len(m.group(1))
            blocks.append(f"<h{n}>{_inline(m.group(2))}</h{n}>")
            i += 1
            continue
        if stripped.startswith("&gt;"):
            flush()
            quoted = []
            while i < len(lines) and lines[i].strip().startswith("&gt;"):
                quoted.append(lines[i].strip()[4:].lstrip())
                i += 1
            blocks.append("<blockquote>" + "<br>".join(_inline(x) for x in quoted) + "</blockquote>")
            continue
        for pattern, tag in ((_UL, "ul"), (_OL, "ol")):
            m = pattern.fullmatch(stripped)
            if m:
                flush()
                items = []
                start = m.group(1) if tag == "ol" else None
                while i < len(lines):
                    m2 = pattern.fullmatch(lines[i].strip())
                    if not m2:
                        break
                    items.append(f"<li>{_inline(m2.group(m2.lastindex))}</li>")
                    i += 1
                attr = f' start="{int(start)}"' if start and int(start) != 1 else ""
                blocks.append(f"<{tag}{attr}>" + "".join(items) + f"</{tag}>")
                break
        else:
            para.append(stripped)
            i += 1
    flush()
    return sanitize_html("".join(blocks))


def markdown_content(source: str) -> dict:
    """The content keys of a message written in Markdown: `body` is the source (what
    clients without HTML show), plus `format`/`formatted_body` when there is formatting."""
    rendered = render_markdown(source)
    plain = "<p>" + "<br>".join(html.escape(x.strip(), quote=False)
                                for x in source.strip().split("\n")) + "</p>"
    if rendered == plain:
        return {"body": source}
    return {"body": source, "format": "org.matrix.custom.html", "formatted_body": rendered}
