"""Room upgrades (POST /rooms/{roomId}/upgrade): a replacement room in a new room version,
per the spec's "Server behaviour" for upgrades.

1. The upgrader must be joined and have the power to send `m.room.tombstone`.
2. The new room's create event names the old room as `predecessor` (with the old room's
   last event, except in v12+ where the event id is left out), copies `type` and
   `m.federate: false`, and keeps the old room's tenant. In v12+ the upgrader and the
   `additional_creators` given are the creators; earlier creators are not carried over.
3. Transferable state is copied: server ACL, encryption, name, avatar, topic, guest
   access, history visibility, join rules, power levels, and a space's children. The
   upgrader's level is raised while the state is copied and set back afterwards. Bans
   are copied; other memberships are not (members follow the tombstone; for invite-only
   rooms the client invites them, as Element's upgrade dialog offers).
4. Local aliases, the canonical alias and the room directory listing move to the new room.
5. `m.room.tombstone` is sent to the old room, and its `events_default` and `invite`
   levels are raised to max(50, users_default + 1) so it falls quiet.

The new room commits in one transaction (or not at all); the steps on the old room come
after it, so a failure there leaves a usable new room and an old room still intact."""
from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any

from homeserver import auth_rules
from homeserver.async_utils import Coalescer
from homeserver.errors import MatrixError, bad_json, forbidden, not_found
from homeserver.ids import is_valid_user_id, split_id
from homeserver.room_creation import Queue, commit_new_room, default_power_levels
from homeserver.room_creation import new_room_id as new_room_id_for
from homeserver.room_directory import set_published
from homeserver.room_heads import RoomHead
from homeserver.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion
from homeserver.tenancy import TENANT_KEY, room_tenant
from storage import directory as directory_store

if TYPE_CHECKING:
    from homeserver.server import HomeServer

logger = logging.getLogger(__name__)

TOMBSTONE = "m.room.tombstone"
COPIED_STATE = ("m.room.server_acl", "m.room.encryption", "m.room.name", "m.room.avatar",
                "m.room.topic", "m.room.guest_access", "m.room.history_visibility",
                "m.room.join_rules")
MAX_ADDITIONAL_CREATORS = 100
_upgrades = Coalescer()  # a double-clicked upgrade makes one room, not two


def _int_levels(mapping: Any) -> list[int]:
    return [v for v in mapping.values() if type(v) is int] if isinstance(mapping, dict) else []


def parse_request(body: dict[str, Any]) -> tuple[RoomVersion, list[str]]:
    version = body.get("new_version")
    if version is None:
        raise MatrixError(400, "M_MISSING_PARAM", "new_version is required")
    if not isinstance(version, str):
        raise bad_json("new_version must be a string")
    if version not in KNOWN_ROOM_VERSIONS:
        raise MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION", f"room version {version!r} is not supported")
    extra = body.get("additional_creators", [])
    if not isinstance(extra, list) or not all(isinstance(u, str) for u in extra):
        raise bad_json("additional_creators must be a list of user ids")
    if len(extra) > MAX_ADDITIONAL_CREATORS or not all(is_valid_user_id(u) for u in extra):
        raise MatrixError(400, "M_INVALID_PARAM", "additional_creators must be valid user ids")
    return KNOWN_ROOM_VERSIONS[version], list(dict.fromkeys(extra))


async def upgrade_room(hs: "HomeServer", user_id: str, room_id: str, body: dict[str, Any]) -> str:
    """Returns the replacement room's id."""
    rv, extra_creators = parse_request(body)
    old = await hs.tenancy.head_for(user_id, room_id)
    if old is None:
        raise not_found("unknown room")  # another organization's room does not exist for you
    if old.membership_of(user_id) != "join":
        raise forbidden("you are not in this room")
    needed = auth_rules.get_required_level(TOMBSTONE, True, old.state)
    if auth_rules.get_user_power_level(user_id, old.state) < needed:
        raise forbidden("you need the power to send m.room.tombstone to upgrade this room")
    key = (room_id, user_id, rv.identifier, tuple(extra_creators))
    return await _upgrades.run(key, lambda: _upgrade(hs, user_id, old, rv, extra_creators))


async def _upgrade(hs: "HomeServer", user_id: str, old: RoomHead, rv: RoomVersion,
                   extra_creators: list[str]) -> str:
    profile = await hs.profiles.member_profile(user_id)
    tenant = room_tenant(old)
    create_content = _create_content(old, rv, user_id, extra_creators, tenant)
    new_room_id = new_room_id_for(hs, rv)
    old_alias = old.state.get(("m.room.canonical_alias", ""))
    alias_contents = _split_canonical_alias(hs, old_alias.content if old_alias else None)

    def fill(head: RoomHead, queue: Queue) -> None:
        creators = auth_rules.room_creators(head.state[("m.room.create", "")])
        final_pl = _new_power_levels(old, user_id, rv, creators)
        copying_pl = _with_copying_level(final_pl, user_id, rv)
        queue("m.room.member", {"membership": "join", **profile}, user_id)
        queue("m.room.power_levels", copying_pl)
        for event_type in COPIED_STATE:
            ev = old.state.get((event_type, ""))
            if ev is not None:
                queue(event_type, copy.deepcopy(ev.content))
        if _room_type(old) == "m.space":
            for (event_type, child), ev in sorted(old.state.items()):
                if event_type == "m.space.child" and ev.content:  # empty: removed from the space
                    queue(event_type, copy.deepcopy(ev.content), child)
        if alias_contents is not None:
            queue("m.room.canonical_alias", alias_contents[1])
        if copying_pl != final_pl:
            queue("m.room.power_levels", final_pl)
        for (event_type, target), ev in sorted(old.state.items()):
            if event_type == "m.room.member" and ev.membership == "ban":
                try:
                    queue("m.room.member", copy.deepcopy(ev.content), target)
                except MatrixError as e:  # refused before it was queued: skip that one
                    logger.warning("upgrade of %s: not copying the ban of %s: %s", old.room_id, target, e)

    new = await commit_new_room(hs, user_id, rv, create_content, new_room_id, fill)
    await hs.db.run(directory_store.move_aliases, old.room_id, new.room_id)
    if old.is_public:
        await set_published(hs, new.room_id, True)
        await set_published(hs, old.room_id, False)
    await hs.event_creator.send(old.room_id, user_id, TOMBSTONE, {
        "body": "This room has been replaced", "replacement_room": new.room_id}, "")
    if alias_contents is not None:
        await _best_effort(hs, old, user_id, "m.room.canonical_alias", alias_contents[0])
    await _quieten(hs, old, user_id)
    return new.room_id


def _room_type(head: RoomHead) -> Any:
    return head.state[("m.room.create", "")].content.get("type")


def _create_content(old: RoomHead, rv: RoomVersion, user_id: str, extra_creators: list[str],
                    tenant: str | None) -> dict[str, Any]:
    predecessor: dict[str, Any] = {"room_id": old.room_id}
    if not rv.room_id_from_create:
        # v12+ may leave the event id out; before, it names the old room's last event.
        predecessor["event_id"] = old.extremities[0]
    content: dict[str, Any] = {"room_version": rv.identifier, "predecessor": predecessor}
    old_create = old.state[("m.room.create", "")].content
    if old_create.get("m.federate") is False:
        content["m.federate"] = False
    if "type" in old_create:
        content["type"] = copy.deepcopy(old_create["type"])
    if not rv.create_sender_is_creator:
        content["creator"] = user_id
    others = [u for u in extra_creators if u != user_id]
    if rv.privileged_creators and others:
        content["additional_creators"] = others
    if tenant is not None:
        content[TENANT_KEY] = tenant
    return content


def _new_power_levels(old: RoomHead, user_id: str, rv: RoomVersion, creators: set[str]) -> dict[str, Any]:
    """The old room's power levels as they apply in the new room."""
    old_pl = old.state.get(("m.room.power_levels", ""))
    if old_pl is None:
        return default_power_levels(user_id, rv.privileged_creators, [])
    pl = copy.deepcopy(old_pl.content)
    users = pl.get("users") if isinstance(pl.get("users"), dict) else {}
    old_create = old.state[("m.room.create", "")]
    if old.room_version.privileged_creators and not rv.privileged_creators:
        # The old creators' power was implied; here it has to be written down.
        top = max([100, *_int_levels(users)])
        for creator in auth_rules.room_creators(old_create):
            users.setdefault(creator, top)
    if rv.privileged_creators:
        users = {u: v for u, v in users.items() if u not in creators}
    pl["users"] = users
    return pl


def _with_copying_level(pl: dict[str, Any], user_id: str, rv: RoomVersion) -> dict[str, Any]:
    """The power levels to copy the state under: the upgrader may need more power for a
    moment than the old room gave them (v12+ creators have all the power there is)."""
    if rv.privileged_creators:
        return pl
    named = [pl.get("state_default", 50), pl.get("ban", 50)]
    needed = max([v for v in named if type(v) is int] + _int_levels(pl.get("events")), default=50)
    users = pl["users"]
    current = users.get(user_id, pl.get("users_default", 0))
    if type(current) is int and current >= needed:
        return pl
    return {**pl, "users": {**users, user_id: needed}}


def _split_canonical_alias(hs: "HomeServer", content: dict | None) -> tuple[dict, dict] | None:
    """(what stays in the old room, what moves to the new one): local aliases move."""
    if not content:
        return None

    def local(alias: Any) -> bool:
        parts = split_id(alias, "#") if isinstance(alias, str) else None
        return parts is not None and parts[1] == hs.server_name

    stays, moves = dict(content), {}
    if local(content.get("alias")):
        moves["alias"] = stays.pop("alias")
    alt = content.get("alt_aliases")
    if isinstance(alt, list) and any(local(a) for a in alt):
        moves["alt_aliases"] = [a for a in alt if local(a)]
        stays["alt_aliases"] = [a for a in alt if not local(a)]
        if not stays["alt_aliases"]:
            del stays["alt_aliases"]
    return (stays, moves) if moves else None


async def _best_effort(hs: "HomeServer", head: RoomHead, user_id: str, event_type: str,
                       content: dict) -> None:
    try:
        await hs.event_creator.send(head.room_id, user_id, event_type, content, "")
    except MatrixError as e:
        logger.warning("upgrade of %s: could not send %s: %s", head.room_id, event_type, e)


async def _quieten(hs: "HomeServer", old: RoomHead, user_id: str) -> None:
    """Raise the old room's events_default and invite levels so it falls quiet."""
    pl_event = old.state.get(("m.room.power_levels", ""))
    if pl_event is None:
        return
    pl = copy.deepcopy(pl_event.content)
    users_default = pl.get("users_default", 0)
    restricted = max(50, (users_default if type(users_default) is int else 0) + 1)
    changed = False
    for key, default in (("events_default", 0), ("invite", 0)):
        current = pl.get(key, default)
        if type(current) is not int or current < restricted:
            pl[key] = restricted
            changed = True
    if changed:
        await _best_effort(hs, old, user_id, "m.room.power_levels", pl)
