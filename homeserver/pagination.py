"""Room pagination tokens. `t<depth>_<stream>` is a topological position (used by
/messages and /context); `s<stream>` is a stream position (sync's next_batch), accepted
as a starting point too. A token names an event's position and is exclusive both ways:
paging backwards from it starts with the event before, paging forwards with the event
after (so forward paging from a backward page's `end` does not repeat its oldest event)."""
from __future__ import annotations

from homeserver.errors import MatrixError

Position = tuple[int, int]  # (depth, stream_ordering)
END = (2**62, 2**62)
START = (-1, -1)


def topo_token(pos: Position) -> str:
    return f"t{pos[0]}_{pos[1]}"


def parse_token(token: str) -> tuple[int | None, int]:
    """(depth or None for a stream token, stream_ordering)."""
    try:
        if token.startswith("t"):
            depth, _, stream = token[1:].partition("_")
            return int(depth), int(stream)
        if token.startswith("s"):
            return None, int(token[1:].split("_")[0])
    except ValueError:
        pass
    raise MatrixError(400, "M_INVALID_PARAM", f"invalid pagination token {token!r}")
