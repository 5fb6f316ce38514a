"""The bridge's HTML sanitizer and Markdown subset: what reaches the ERP as HTML is
always on the whitelist and balanced, and Markdown from the ERP renders as expected."""
from __future__ import annotations

import re
from html.parser import HTMLParser

from hypothesis import given, settings
from hypothesis import strategies as st

from appservice.erp_bridge.richtext import (
    ALLOWED_TAGS, markdown_content, render_markdown, sanitize_html)


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.depth = 0

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in ("br", "hr"):
            self.depth += 1

    def handle_endtag(self, tag):
        self.depth -= 1


def _check_safe(out: str) -> None:
    c = _Collect()
    c.feed(out)
    c.close()
    assert c.depth == 0, out  # balanced
    for tag, attrs in c.tags:
        assert tag in ALLOWED_TAGS, out
        assert not any(a.startswith("on") for a in attrs), out
        if "href" in attrs:
            assert re.match(r"(https?:|mailto:)", attrs["href"], re.I), out


def test_sanitizer_drops_scripts_handlers_and_bad_links():
    out = sanitize_html('<p onclick="x()">hi<script>evil()</script>'
                        '<a href="javascript:alert(1)">a</a><a href=" JaVaScRiPt:x">b</a>'
                        '<a href="https://ok.example/?a=1&amp;b=2">c</a><img src=x onerror=y>'
                        '<mx-reply><blockquote>quoted fallback</blockquote></mx-reply><b>open')
    assert out == ('<p>hi<a>a</a><a>b</a><a href="https://ok.example/?a=1&amp;b=2" '
                   'rel="noopener noreferrer">c</a><b>open</b></p>')
    assert sanitize_html("<style>p{}</style>x &lt;y&gt;") == "x &lt;y&gt;"
    assert sanitize_html('<code class="language-py">a</code><code class="x y">b</code>') == \
        '<code class="language-py">a</code><code>b</code>'


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["<b>", "</b>", "<i>", "</p>", "<p>", "<script>", "</script>",
                                 "<a href='javascript:x'>", "<a href='http://x'>", "</a>", "<br/>",
                                 "<div onmouseover=1>", "</div>", "<!--", "-->", "<svg>", "</svg>",
                                 "text", "&amp;", "<", ">", '"', "<img src=x>", "<mx-reply>",
                                 "</mx-reply>", "<table><tr><td>"]), max_size=25))
def test_sanitizer_output_is_always_whitelisted_and_balanced(pieces):
    out = sanitize_html("".join(pieces))
    _check_safe(out)
    assert sanitize_html(out) == out  # a fixed point: sanitizing again changes nothing


def test_markdown_subset():
    html = render_markdown("Price **confirmed** for *Müller* `a<b`\n"
                           "see [the order](https://erp.example/o/1) or [x](javascript:y)\n\n"
                           "- one\n- two\n\n3. three\n4. four\n\n> quoted\n\n## Title\n\n"
                           "```\n<tag> & **not bold**\n```\n<script>alert(1)</script>")
    assert html == (
        '<p>Price <strong>confirmed</strong> for <em>Müller</em> <code>a&lt;b</code><br>'
        'see <a href="https://erp.example/o/1" rel="noopener noreferrer">the order</a> or [x](javascript:y)</p>'
        '<ul><li>one</li><li>two</li></ul><ol start="3"><li>three</li><li>four</li></ol>'
        '<blockquote>quoted</blockquote><h2>Title</h2>'
        '<pre><code>&lt;tag&gt; &amp; **not bold**</code></pre>'
        '<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>')


def test_markdown_content_keeps_source_and_skips_html_for_plain_text():
    assert markdown_content("just text\nsecond line") == {"body": "just text\nsecond line"}
    c = markdown_content("**bold**")
    assert c == {"body": "**bold**", "format": "org.matrix.custom.html",
                 "formatted_body": "<p><strong>bold</strong></p>"}


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab *_`[]()#>-1.\n<>&\"'h:/~")), max_size=80))
def test_markdown_output_is_always_safe(source):
    _check_safe(render_markdown(source))
