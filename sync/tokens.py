"""Sync tokens: one position per stream, encoded `s<events>_<typing>_<receipts>_<presence>
_<account_data>_<to_device>_<device_lists>`. The leading `s<events>` part is also a valid
room pagination token. Garbage is refused with M_INVALID_PARAM.

A named tuple rather than a frozen dataclass: every woken long-poll builds, copies and
encodes one, and a frozen dataclass's construction is several times slower."""
from __future__ import annotations

from typing import NamedTuple

from homeserver.errors import MatrixError
from homeserver.lru import LRU

# Parsed tokens: the members of a busy room re-poll with the same few `since` strings.
_parsed: LRU[str, "StreamToken"] = LRU(4096)
_last_encoded: tuple[tuple[int, ...], str] = ((), "")


class StreamToken(NamedTuple):
    events: int = 0
    typing: int = 0
    receipts: int = 0
    presence: int = 0
    account_data: int = 0
    to_device: int = 0
    device_lists: int = 0

    def encode(self) -> str:
        # Every long-poll woken by one change encodes the same token: the last one is kept.
        global _last_encoded
        last, text = _last_encoded
        if last == self:
            return text
        text = "s" + "_".join(map(str, self))
        _last_encoded = (self, text)
        return text

    @classmethod
    def parse(cls, token: str) -> "StreamToken":
        found = _parsed.get(token)
        if found is not None:
            return found
        found = cls._parse(token)
        _parsed.put(token, found)
        return found

    @classmethod
    def _parse(cls, token: str) -> "StreamToken":
        try:
            if not token.startswith("s"):
                raise ValueError
            parts = [int(p) for p in token[1:].split("_")]
            if not 1 <= len(parts) <= len(cls._fields) or any(p < 0 for p in parts):
                raise ValueError
        except ValueError:
            raise MatrixError(400, "M_INVALID_PARAM", f"invalid sync token {token[:40]!r}") from None
        return cls(*parts)

    def copy_with(self, **changes: int) -> "StreamToken":
        return self._replace(**changes)
