"""Thumbnails: which configured size answers a request, and making one with Pillow.

`make_thumbnail` decodes images and blocks: run it on the media thread pool."""
from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from PIL import Image, ImageOps

# Pillow format -> content type of the sources we thumbnail.
SOURCE_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp"}
# File name extension of each type a thumbnail can have.
EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/gif": "gif", "image/webp": "webp"}
_ORIENTATION = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}  # EXIF orientations that turn the picture by 90 degrees


class Size(Protocol):
    width: int
    height: int
    method: str


class CannotThumbnail(Exception):
    """Not an image we thumbnail, or one that does not decode."""


class TooLargeToThumbnail(Exception):
    pass


def choose_size(sizes: list[Size], width: int, height: int, method: str) -> Size:
    """The configured size that answers a request for `width` x `height`: the smallest of
    the asked method that is at least that big; else the smallest of any method that is;
    else (a request beyond every configured size) the largest configured size. The spec
    forbids answering smaller than asked while a configured size could do better."""
    def covers(s: Size) -> bool:
        return s.width >= width and s.height >= height

    def area(s: Size) -> int:
        return s.width * s.height

    for pool in ([s for s in sizes if s.method == method], list(sizes)):
        fitting = [s for s in pool if covers(s)]
        if fitting:
            return min(fitting, key=area)
    same = [s for s in sizes if s.method == method] or list(sizes)
    return max(same, key=area)


@dataclass(frozen=True)
class Made:
    content_type: str
    width: int
    height: int
    is_original: bool          # the source itself answers (small animation, animated=true)
    path: Path | None = None   # the written thumbnail (temporary), unless is_original


def output_type(source_format: str) -> tuple[str, str]:
    """(Pillow format, content type): JPEG stays JPEG, the rest is PNG (it keeps
    transparency)."""
    if source_format == "JPEG":
        return "JPEG", "image/jpeg"
    return "PNG", "image/png"


def scaled_size(src_w: int, src_h: int, box_w: int, box_h: int) -> tuple[int, int]:
    """`scale`: fit inside the box keeping the aspect ratio, never enlarging."""
    s = min(box_w / src_w, box_h / src_h, 1.0)
    return max(1, round(src_w * s)), max(1, round(src_h * s))


def crop_box(src_w: int, src_h: int, box_w: int, box_h: int) -> tuple[int, int, int, int]:
    """`crop` of a source smaller than the box in some direction: the centred region of
    the box's aspect ratio, as large as the source allows (nothing is enlarged)."""
    aspect = box_w / box_h
    if src_w / src_h > aspect:
        w, h = max(1, round(src_h * aspect)), src_h
    else:
        w, h = src_w, max(1, round(src_w / aspect))
    left, top = (src_w - w) // 2, (src_h - h) // 2
    return left, top, left + w, top + h


def make_thumbnail(source: Path, tmp_dir: Path, size: Size, animated: bool, max_pixels: int) -> Made:
    try:
        with Image.open(source) as im:
            return _make(im, tmp_dir, size, animated, max_pixels)
    except (TooLargeToThumbnail, CannotThumbnail):
        raise
    except (Image.DecompressionBombError,) as e:
        raise TooLargeToThumbnail(str(e)) from None
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError, Image.UnidentifiedImageError) as e:
        raise CannotThumbnail(str(e)) from None


def _make(im: Image.Image, tmp_dir: Path, size: Size, animated: bool, max_pixels: int) -> Made:
    fmt = im.format or ""
    if fmt not in SOURCE_TYPES:
        raise CannotThumbnail(f"cannot thumbnail {fmt or 'this content'}")
    if im.width * im.height > max_pixels:
        raise TooLargeToThumbnail(f"{im.width}x{im.height} is too large to thumbnail")
    box_w, box_h = size.width, size.height
    if animated and getattr(im, "is_animated", False) and im.width <= box_w and im.height <= box_h:
        return Made(SOURCE_TYPES[fmt], im.width, im.height, is_original=True)
    im.seek(0)  # the first frame of an animation
    swapped = im.getexif().get(_ORIENTATION) in _SWAPS_AXES
    if fmt == "JPEG":  # decode at a reduced scale when the result is much smaller
        want = _decode_size(im.width, im.height, box_w, box_h, size.method, swapped)
        im.draft("RGB", want)
    im = ImageOps.exif_transpose(im) or im
    has_alpha = im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)
    im = im.convert("RGBA" if has_alpha and fmt != "JPEG" else "RGB")
    if size.method == "scale":
        im = im.resize(scaled_size(im.width, im.height, box_w, box_h), Image.LANCZOS)
    elif im.width >= box_w and im.height >= box_h:
        im = ImageOps.fit(im, (box_w, box_h), Image.LANCZOS)
    else:
        im = im.crop(crop_box(im.width, im.height, box_w, box_h))
    out_format, content_type = output_type(fmt)
    fd, name = tempfile.mkstemp(dir=tmp_dir, prefix="thumb-")
    with os.fdopen(fd, "wb") as f:
        if out_format == "JPEG":
            im.save(f, "JPEG", quality=80, optimize=True)
        else:
            im.save(f, "PNG")
    return Made(content_type, im.width, im.height, is_original=False, path=Path(name))


def _decode_size(w: int, h: int, box_w: int, box_h: int, method: str, swapped: bool) -> tuple[int, int]:
    """The smallest decode size (in the file's own orientation) that still yields the
    thumbnail without enlarging."""
    if swapped:
        box_w, box_h = box_h, box_w
    s = min(box_w / w, box_h / h) if method == "scale" else max(box_w / w, box_h / h)
    s = min(s, 1.0)
    return max(1, math.ceil(w * s)), max(1, math.ceil(h * s))
