"""Room aliases in an alias space split by tenant.

Each tenant owns the aliases of this server whose localpart starts with its slug and a
dot: `#<slug>.<name>:server`. The slug is the tenant id with `=` written `=3d` and `.`
written `=2e`, so a slug holds no dot and the first dot of a localpart ends it: `acme` ->
`#acme.lobby`, `acme.eu` -> `#acme=2eeu.lobby`. Every other alias of this server is in the
plain part, which belongs to users without a tenant. Aliases in an application service's
exclusive namespace are the service's (it names them, e.g. the ERP bridge's `#_erp_...`),
whichever part they would otherwise fall in; there the walls follow the room the alias
points to.

Which part an alias is in depends on the alias alone, never on whether it exists, so
using an alias of another part (resolve, join, create, delete) is refused with one answer
(403 M_FORBIDDEN) and tells nothing; in a service's namespace another tenant's alias
answers exactly like a missing one (404 M_NOT_FOUND)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from homeserver.errors import MatrixError, forbidden, not_found
from homeserver.ids import is_valid_room_alias, split_id
from homeserver.tenancy import TENANT_ID_RE
from storage import directory as directory_store

if TYPE_CHECKING:
    from homeserver.server import HomeServer

SEPARATOR = "."
ALIAS_REFUSED = "this room alias is not available to you"
_ESCAPES = {"2e": ".", "3d": "="}


def tenant_slug(tenant_id: str) -> str:
    return tenant_id.replace("=", "=3d").replace(".", "=2e")


def slug_tenant(slug: str) -> str | None:
    """The tenant whose slug `slug` is, or None when it is nobody's (not a canonical slug)."""
    out, i = [], 0
    while i < len(slug):
        if slug[i] == "=":
            code = slug[i + 1:i + 3]
            if code not in _ESCAPES:
                return None
            out.append(_ESCAPES[code])
            i += 3
        elif slug[i] == ".":
            return None
        else:
            out.append(slug[i])
            i += 1
    tenant = "".join(out)
    return tenant if TENANT_ID_RE.match(tenant) and tenant_slug(tenant) == slug else None


def part_of(localpart: str) -> str | None:
    """The tenant whose part of the alias space `localpart` is in; None: the plain part."""
    slug, sep, _ = localpart.partition(SEPARATOR)
    return slug_tenant(slug) if sep else None


def localpart_for(tenant: str | None, name: str) -> str:
    """Where a room alias named `name` by a user of `tenant` lives."""
    return f"{tenant_slug(tenant)}{SEPARATOR}{name}" if tenant is not None else name


@dataclass
class AliasPlace:
    alias: str
    local: bool            # on this server
    service: Any = None    # the application service whose exclusive namespace holds it
    tenant: str | None = None  # the part it is in (when local and not a service's)


def place_of(hs: "HomeServer", alias: str) -> AliasPlace:
    if not is_valid_room_alias(alias):
        raise MatrixError(400, "M_INVALID_PARAM", "malformed room alias")
    localpart, server = split_id(alias, "#")  # type: ignore[misc]
    if server != hs.server_name:
        return AliasPlace(alias, False)
    appservices = getattr(hs, "appservices", None)
    owner = appservices.exclusive_alias_owner(alias) if appservices is not None else None
    if owner is not None:
        return AliasPlace(alias, True, service=owner)
    return AliasPlace(alias, True, tenant=part_of(localpart))


async def check_part(hs: "HomeServer", user_id: str, place: AliasPlace) -> None:
    """403 for an alias in another tenant's part, whether or not it exists."""
    if place.local and place.service is None and place.tenant != await hs.tenancy.tenant_of(user_id):
        raise forbidden(ALIAS_REFUSED)


def check_service_namespace(place: AliasPlace, appservice: Any) -> None:
    """Aliases in an application service's exclusive namespace are its own to create."""
    if place.service is not None and place.service is not appservice:
        raise MatrixError(400, "M_EXCLUSIVE", f"alias {place.alias} is reserved by an application service")


async def lookup(hs: "HomeServer", alias: str, ask_service: bool = True) -> tuple[str, str] | None:
    """(room_id, creator); an application service owning the namespace may be asked to
    create an unknown alias first."""
    found = await hs.db.run(directory_store.get_alias, alias)
    appservices = getattr(hs, "appservices", None)
    if found is None and ask_service and appservices is not None \
            and await appservices.queries.query_alias(alias):
        found = await hs.db.run(directory_store.get_alias, alias)
    return found


async def resolve(hs: "HomeServer", user_id: str, alias: str,
                  ask_service: bool = True) -> tuple[str, str]:
    """(room_id, creator) of an alias `user_id` may use: 403 for another tenant's part,
    404 when it is missing or points to a room walled off from the user."""
    place = place_of(hs, alias)
    await check_part(hs, user_id, place)
    found = await lookup(hs, alias, ask_service)
    if found is None or await hs.tenancy.head_for(user_id, found[0]) is None:
        raise not_found(f"room alias {alias} not found")
    return found


async def alias_for_new_room(hs: "HomeServer", creator: str, name: Any, appservice: Any) -> str:
    """The alias createRoom's `room_alias_name` asks for, placed in the creator's part
    (an application service naming one in its own namespace gets it as named)."""
    if not isinstance(name, str) or not name or any(c in name for c in ": \x00#"):
        raise MatrixError(400, "M_INVALID_PARAM", "room_alias_name is not a valid alias localpart")
    as_named = f"#{name}:{hs.server_name}"
    if appservice is not None and is_valid_room_alias(as_named) \
            and place_of(hs, as_named).service is appservice:
        return as_named
    alias = f"#{localpart_for(await hs.tenancy.tenant_of(creator), name)}:{hs.server_name}"
    place = place_of(hs, alias)
    check_service_namespace(place, appservice)
    await check_part(hs, creator, place)
    return alias
