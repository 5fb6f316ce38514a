"""The spec's checks on the m.room.canonical_alias content a local client sends: every
alias well-formed (400 M_INVALID_PARAM), and every alias of this server existing and
pointing to the room (400 M_BAD_ALIAS). Aliases of other servers cannot be asked about
without federation and are taken as given. Aliases the current event already lists are
not checked again, so an alias deleted from the directory does not block other changes."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from homeserver import room_aliases
from homeserver.errors import MatrixError, invalid_param
from homeserver.event import Event
from homeserver.ids import is_valid_room_alias, split_id
from homeserver.room_heads import RoomHead

if TYPE_CHECKING:
    from homeserver.server import HomeServer


def _aliases(content: dict[str, Any]) -> tuple[Any, Any]:
    return content.get("alias"), content.get("alt_aliases", [])


async def canonical_alias_check(hs: "HomeServer", head: RoomHead,
                                content: dict[str, Any]) -> Callable[[RoomHead, Event], None]:
    """Looks the aliases up now; the returned check refuses the event after the auth rules
    have passed it (a user who may not send it is told that first)."""
    error = await _problem(hs, head, content)

    def check(_head: RoomHead, _event: Event) -> None:
        if error is not None:
            raise error
    return check


async def _problem(hs: "HomeServer", head: RoomHead, content: dict[str, Any]) -> MatrixError | None:
    alias, alt_aliases = _aliases(content)
    if alias is not None and not isinstance(alias, str):
        return invalid_param("alias must be a string")
    if not isinstance(alt_aliases, list) or not all(isinstance(a, str) for a in alt_aliases):
        return invalid_param("alt_aliases must be a list of strings")
    current = head.state.get(("m.room.canonical_alias", ""))
    old_alias, old_alt = _aliases(current.content) if current is not None else (None, [])
    old = {old_alias, *(old_alt if isinstance(old_alt, list) else [])}
    new = [a for a in ([alias] if alias else []) + alt_aliases if a not in old]
    for a in new:
        if not is_valid_room_alias(a):
            return invalid_param(f"{a!r} is not a valid room alias")
    for a in new:
        if split_id(a, "#")[1] != hs.server_name:
            continue
        found = await room_aliases.lookup(hs, a)
        if not found or found[0] != head.room_id:
            return MatrixError(400, "M_BAD_ALIAS", f"the alias {a} does not point to this room")
    return None
