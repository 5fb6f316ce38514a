"""The two small languages push-rule conditions use: dotted property paths (with `\\.`
and `\\\\` escapes) and glob patterns (`*` any run of characters, `?` exactly one),
matched case-insensitively against a whole value, or, for `content.body`, against any
substring that starts and ends at a word boundary."""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

_MISSING = object()
# A word boundary is the start or end of the value, or any character outside [A-Za-z0-9_].
_WORD = "A-Za-z0-9_"


def split_path(key: str) -> tuple[str, ...]:
    """`content.m\\.relates_to.rel_type` -> ("content", "m.relates_to", "rel_type").
    A backslash escapes the next character (`\\.` a dot, `\\\\` a backslash); any other
    escaped character stands for itself, as does a trailing lone backslash."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(key):
        c = key[i]
        if c == "\\" and i + 1 < len(key):
            current.append(key[i + 1])
            i += 2
            continue
        if c == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    parts.append("".join(current))
    return tuple(parts)


def lookup(obj: Any, path: tuple[str, ...]) -> Any:
    """The value at `path` in nested objects, or MISSING."""
    for part in path:
        if not isinstance(obj, dict):
            return _MISSING
        obj = obj.get(part, _MISSING)
        if obj is _MISSING:
            return _MISSING
    return obj


MISSING = _MISSING


def _glob_body(pattern: str) -> str:
    out = []
    for c in pattern:
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        else:
            out.append(re.escape(c))
    return "".join(out)


@lru_cache(maxsize=4096)
def glob_regex(pattern: str, words: bool = False) -> re.Pattern:
    """The compiled form of a glob: whole-value (use `.fullmatch`), or with `words`, any
    word-bounded substring (use `.search`)."""
    body = _glob_body(pattern)
    if words:
        return re.compile(f"(?:^|(?<=[^{_WORD}])){body}(?:$|(?=[^{_WORD}]))",
                          re.IGNORECASE | re.DOTALL)
    return re.compile(body, re.IGNORECASE | re.DOTALL)


def glob_matches(pattern: str, value: str, words: bool = False) -> bool:
    regex = glob_regex(pattern, words)
    return (regex.search(value) if words else regex.fullmatch(value)) is not None
