"""Sync tokens: one position per stream, encoded `s<events>_<typing>_<receipts>_<presence>
_<account_data>_<to_device>_<device_lists>`. The leading `s<events>` part is also a valid
room pagination token. Garbage is refused with M_INVALID_PARAM."""
from __future__ import annotations

from dataclasses import dataclass, fields

from homeserver.errors import MatrixError


@dataclass(frozen=True)
class StreamToken:
    events: int = 0
    typing: int = 0
    receipts: int = 0
    presence: int = 0
    account_data: int = 0
    to_device: int = 0
    device_lists: int = 0

    def encode(self) -> str:
        return (f"s{self.events}_{self.typing}_{self.receipts}_{self.presence}_{self.account_data}"
                f"_{self.to_device}_{self.device_lists}")

    @classmethod
    def parse(cls, token: str) -> "StreamToken":
        try:
            if not token.startswith("s"):
                raise ValueError
            parts = [int(p) for p in token[1:].split("_")]
            if not 1 <= len(parts) <= len(_NAMES) or any(p < 0 for p in parts):
                raise ValueError
        except ValueError:
            raise MatrixError(400, "M_INVALID_PARAM", f"invalid sync token {token[:40]!r}") from None
        return cls(*parts)

    def copy_with(self, **changes: int) -> "StreamToken":
        values = [getattr(self, name) for name in _NAMES]
        for name, value in changes.items():
            values[_NAMES.index(name)] = value
        return StreamToken(*values)


_NAMES = tuple(f.name for f in fields(StreamToken))  # once: fields() is slow per call
