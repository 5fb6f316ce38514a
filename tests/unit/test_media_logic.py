"""Pure logic of the media repository: thumbnail size choice and geometry, byte ranges,
Content-Disposition, content types, the address filter of URL previews, OpenGraph."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import unquote

from hypothesis import given
from hypothesis import strategies as st

from client_api.media_serving import disposition, parse_range, served_type
from homeserver.config import _default_thumbnail_sizes
from homeserver.media import content_types
from homeserver.media.ip_filter import IpFilter
from homeserver.media.opengraph import parse_html
from homeserver.media.thumbnails import choose_size, crop_box, scaled_size

SIZES = _default_thumbnail_sizes()


@dataclass(frozen=True)
class S:
    width: int
    height: int
    method: str


sizes_st = st.lists(st.builds(S, st.integers(1, 2000), st.integers(1, 2000), st.sampled_from(["crop", "scale"])),
                    min_size=1, max_size=8)


@given(sizes_st, st.integers(1, 3000), st.integers(1, 3000), st.sampled_from(["crop", "scale"]))
def test_chosen_size_is_never_smaller_than_asked_when_one_could_do(sizes, w, h, method):
    chosen = choose_size(sizes, w, h, method)
    assert chosen in sizes
    same = [s for s in sizes if s.method == method and s.width >= w and s.height >= h]
    any_fit = [s for s in sizes if s.width >= w and s.height >= h]
    if same:
        assert chosen.method == method and chosen.width * chosen.height == min(s.width * s.height for s in same)
    elif any_fit:
        assert chosen.width >= w and chosen.height >= h
    else:
        pool = [s for s in sizes if s.method == method] or sizes
        assert chosen.width * chosen.height == max(s.width * s.height for s in pool)


def test_default_sizes_answer_common_requests():
    assert (lambda s: (s.width, s.height, s.method))(choose_size(SIZES, 96, 96, "crop")) == (96, 96, "crop")
    assert (lambda s: (s.width, s.height, s.method))(choose_size(SIZES, 40, 40, "crop")) == (96, 96, "crop")
    assert (lambda s: (s.width, s.height, s.method))(choose_size(SIZES, 800, 600, "scale")) == (800, 600, "scale")
    # No crop size is big enough: a scale size that is.
    assert (lambda s: (s.width, s.height, s.method))(choose_size(SIZES, 100, 100, "crop")) == (320, 240, "scale")


@given(st.integers(1, 5000), st.integers(1, 5000), st.integers(1, 1000), st.integers(1, 1000))
def test_scale_fits_the_box_and_never_enlarges(sw, sh, bw, bh):
    w, h = scaled_size(sw, sh, bw, bh)
    assert 1 <= w <= max(1, min(sw, bw)) and 1 <= h <= max(1, min(sh, bh))


@given(st.integers(1, 5000), st.integers(1, 5000), st.integers(1, 1000), st.integers(1, 1000))
def test_crop_box_lies_inside_the_source(sw, sh, bw, bh):
    left, top, right, bottom = crop_box(sw, sh, bw, bh)
    assert 0 <= left < right <= sw and 0 <= top < bottom <= sh


@given(st.integers(0, 10**9), st.text(max_size=40))
def test_ranges_stay_inside_the_file(size, header):
    r = parse_range(header, size)
    if r not in (None, False):
        first, last = r
        assert 0 <= first <= last < size


def test_range_forms():
    assert parse_range("bytes=0-9", 100) == (0, 9)
    assert parse_range("bytes=90-", 100) == (90, 99)
    assert parse_range("bytes=-10", 100) == (90, 99)
    assert parse_range("bytes=50-5000", 100) == (50, 99)
    assert parse_range("bytes=100-", 100) is False
    assert parse_range("bytes=-0", 100) is False
    assert parse_range("bytes=0-1,5-6", 100) is None  # several ranges: the whole file
    assert parse_range("items=0-1", 100) is None


@given(st.text(max_size=80), st.sampled_from(["image/png", "text/html", "application/pdf", "image/svg+xml"]))
def test_disposition_is_a_safe_header_that_keeps_the_name(name, content_type):
    value = disposition(content_type, name)
    assert value.isascii() and all(0x20 <= ord(c) < 0x7F for c in value)
    kind, _, rest = value.partition("; ")
    assert kind == ("inline" if content_type == "image/png" else "attachment")
    if not name:
        assert rest == ""
    elif rest.startswith("filename*=utf-8''"):
        assert unquote(rest[len("filename*=utf-8''"):]) == name
    else:
        assert rest == f'filename="{name}"' and '"' not in name and "\\" not in name


def test_disposition_of_a_name_ending_in_a_newline():
    assert disposition("image/png", "a.png\n") == "inline; filename*=utf-8''a.png%0A"


def test_text_is_served_with_a_charset():
    assert served_type("text/plain") == "text/plain; charset=utf-8"
    assert served_type("text/plain; charset=latin1") == "text/plain; charset=latin1"
    assert served_type("image/png") == "image/png"


def test_content_type_header_validation():
    assert content_types.normalize(None) == "application/octet-stream"
    assert content_types.normalize("Image/PNG") == "image/png"
    assert content_types.normalize("text/plain;charset=utf-8") == "text/plain; charset=utf-8"
    for bad in ("text", "text/plain\r\nX-Evil: 1", "a/b; c", "x" * 300 + "/y", "über/type"):
        assert content_types.normalize(bad) is None, bad
    assert content_types.is_allowed("image/png", ["image/*"])
    assert not content_types.is_allowed("image/png; x=y", ["text/*"])
    assert content_types.is_allowed("anything/else", None)


@given(st.text(max_size=200))
def test_normalized_types_are_header_safe(header):
    value = content_types.normalize(header)
    if value is not None:
        assert "\r" not in value and "\n" not in value and value.isascii()


private_v4 = st.sampled_from(["10.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
                              "192.168.0.0/16", "100.64.0.0/10", "224.0.0.0/4", "0.0.0.0/8", "240.0.0.0/4"])


@given(private_v4, st.integers(0, 2**32 - 1))
def test_reserved_addresses_are_refused_in_every_spelling(cidr, n):
    net = ipaddress.ip_network(cidr)
    addr = net[n % net.num_addresses]
    f = IpFilter([])
    assert not f.allows(str(addr))
    assert not f.allows(f"::ffff:{addr}")                      # IPv4-mapped
    assert not f.allows(str(ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) + int(addr))))


def test_address_filter():
    f = IpFilter([])
    for ip in ("::1", "fe80::1", "fc00::5", "ff02::1", "2001:db8::1", "not an ip"):
        assert not f.allows(ip)
    for ip in ("8.8.8.8", "2606:4700::1111"):
        assert f.allows(ip)
    assert IpFilter(["127.0.0.0/8"]).allows("127.0.0.2")
    assert not IpFilter(["127.0.0.0/8"]).allows("10.0.0.1")


@given(st.binary(max_size=500))
def test_opengraph_parsing_never_fails(body):
    og = parse_html(body, "text/html", "https://example.com/a/")
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in og.items())


def test_opengraph_values():
    page = (b"<html><head><meta charset='iso-8859-1'><title>T\xe9st  page</title>"
            b"<meta property='og:image' content='img/logo.png'>"
            b"<meta name='description' content='" + b"d" * 900 + b"'></head>"
            b"<body><script>var x = '<meta property=\"og:title\" content=\"evil\">';</script></body></html>")
    og = parse_html(page, "text/html", "https://example.com/a/page.html")
    assert og["og:title"] == "Tést page"
    assert og["og:image"] == "https://example.com/a/img/logo.png"
    assert len(og["og:description"]) == 500
    og = parse_html(b"<meta property='og:image' content='javascript:alert(1)'>", None, "https://e.com/")
    assert "og:image" not in og


def test_placing_content_can_be_repeated_and_leaves_the_received_file(tmp_path):
    """A transaction that placed a file may be retried, and another process may remove the
    content in between: placing again links it again from the received file, which its
    owner removes only afterwards."""
    from homeserver.media.files import MediaFiles

    files = MediaFiles(tmp_path / "media", "main")
    files.prepare(alone=True)
    received = files.tmp_dir / "upload"
    received.write_bytes(b"same bytes")
    sha = "ab" * 32
    final = files.commit(received, sha)
    assert final.read_bytes() == b"same bytes" and received.exists()
    assert files.commit(received, sha) == final  # a retry: already there
    files.remove(sha)  # the last row went elsewhere meanwhile
    assert not final.exists()
    assert files.commit(received, sha).read_bytes() == b"same bytes"
