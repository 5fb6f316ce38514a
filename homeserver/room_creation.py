"""createRoom: the create event, the creator's join, power levels, join rules, history
visibility, initial state, name/topic, alias and invites, queued together and committed
by the persister in as few batches as it takes."""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Callable

from homeserver import auth_rules, room_aliases
from homeserver.errors import MatrixError, bad_json, invalid_param
from homeserver.event_creation import MAX_ID_TRIES
from homeserver.ids import is_valid_user_id, random_string
from homeserver.room_directory import set_published
from homeserver.room_heads import RoomHead
from homeserver.room_versions import KNOWN_ROOM_VERSIONS, RoomVersion
from homeserver.tenancy import TENANT_KEY
from homeserver.writer_layout import RoomMoved
from storage import directory as directory_store

if TYPE_CHECKING:
    from homeserver.server import HomeServer

PRESETS = {
    "private_chat": {"join_rule": "invite", "history_visibility": "shared", "guest": "can_join", "trusted": False},
    "trusted_private_chat": {"join_rule": "invite", "history_visibility": "shared", "guest": "can_join", "trusted": True},
    "public_chat": {"join_rule": "public", "history_visibility": "shared", "guest": None, "trusted": False},
}


def default_power_levels(creator: str, privileged_creators: bool, trusted: list[str]) -> dict[str, Any]:
    users = {} if privileged_creators else {creator: 100}
    for u in trusted:
        users[u] = 100
    return {
        "users": users, "users_default": 0,
        "events": {
            "m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
            "m.room.server_acl": 100, "m.room.encryption": 100,
        },
        "events_default": 0, "state_default": 50, "ban": 50, "kick": 50, "redact": 50,
        "invite": 0, "historical": 100,
    }


Queue = Callable[..., None]  # queue(event_type, content, state_key="")


def new_room_id(hs: "HomeServer", rv: RoomVersion) -> str | None:
    """A random id for a room of a version whose id is not its create event's hash (None
    for those); with several writers, one that lands on this writer, which builds the
    room's events (hashed ids are moved onto it in EventCreator.queue_create_event)."""
    if rv.room_id_from_create:
        return None
    layout = hs.writer_layout
    for _ in range(MAX_ID_TRIES):
        room_id = f"!{random_string(18)}:{hs.server_name}"
        if layout is None or not hs.writes_rooms or layout.may_create(room_id):
            return room_id
    raise RoomMoved(layout.layout.generation, "no room id lands on this writer now; retry")


async def commit_new_room(hs: "HomeServer", creator: str, rv: RoomVersion, create_content: dict,
                          room_id: str | None, fill: Callable[[RoomHead, Queue], None]) -> RoomHead:
    """Queue the create event and then, in the same synchronous block, whatever `fill`
    queues as `creator`; returns once all of it is committed. If any event is refused,
    the whole room is discarded before anything is written."""
    creator_ev = hs.event_creator
    head, first = creator_ev.queue_create_event(creator, rv, create_content, room_id)
    pending = [first]

    def queue(event_type: str, content: dict, state_key: str | None = "") -> None:
        pending.append(creator_ev.queue_event(head, creator, event_type, content, state_key))

    try:
        fill(head, queue)
    except Exception:
        # The queued events are still only in memory until the persister commits them,
        # so drop the head and let them fail together.
        for d in pending:
            d.addErrback(lambda _f: None)
        hs.persister.discard_room(head.room_id)
        hs.room_heads.invalidate(head.room_id)
        raise
    for d in pending:
        await d
    return head


async def create_room(hs: "HomeServer", creator: str, body: dict[str, Any],
                      appservice: Any = None) -> tuple[str, str | None]:
    """Returns (room_id, alias). Validates everything before writing anything."""
    version_id = body.get("room_version", hs.config.rooms.default_room_version)
    if not isinstance(version_id, str) or version_id not in KNOWN_ROOM_VERSIONS:
        raise MatrixError(400, "M_UNSUPPORTED_ROOM_VERSION", f"room version {version_id!r} is not supported")
    rv = KNOWN_ROOM_VERSIONS[version_id]
    visibility = body.get("visibility", "private")
    if visibility not in ("public", "private"):
        raise invalid_param("visibility must be 'public' or 'private'")
    preset_name = body.get("preset") or ("public_chat" if visibility == "public" else "private_chat")
    if not isinstance(preset_name, str) or preset_name not in PRESETS:
        raise invalid_param(f"unknown preset {preset_name!r}")
    preset = PRESETS[preset_name]
    invites = body.get("invite", [])
    if not isinstance(invites, list) or not all(isinstance(u, str) and is_valid_user_id(u) for u in invites):
        raise bad_json("invite must be a list of user ids")
    for key in ("creation_content", "power_level_content_override"):
        if key in body and not isinstance(body[key], dict):
            raise bad_json(f"{key} must be an object")
    initial_state = body.get("initial_state", [])
    if not isinstance(initial_state, list) or not all(
            isinstance(s, dict) and isinstance(s.get("type"), str)
            and isinstance(s.get("content"), dict) and isinstance(s.get("state_key", ""), str)
            for s in initial_state):
        raise bad_json("initial_state must be a list of {type, state_key, content}")
    for key in ("name", "topic"):
        if key in body and not isinstance(body[key], str):
            raise bad_json(f"{key} must be a string")
    is_direct = body.get("is_direct") is True

    alias = None
    if body.get("room_alias_name") is not None:
        # In the creator's part of the alias space, whatever the client asks.
        alias = await room_aliases.alias_for_new_room(hs, creator, body["room_alias_name"], appservice)
        if await hs.db.run(directory_store.get_alias, alias):
            raise MatrixError(400, "M_ROOM_IN_USE", f"alias {alias} is already in use")

    # The room belongs to the creator's tenant, whatever the client sends.
    tenant = await hs.tenancy.tenant_of(creator)
    for invitee in invites:
        await hs.membership.require_invitable(tenant, invitee)
    for st in initial_state:  # member events there face the same tenant wall
        if st["type"] == "m.room.member":
            await hs.tenancy.tenant_of(st.get("state_key", ""))
    profile = await hs.profiles.member_profile(creator)

    trusted = invites if preset["trusted"] else []
    create_content = copy.deepcopy(body.get("creation_content", {}))
    create_content.pop(TENANT_KEY, None)
    if tenant is not None:
        create_content[TENANT_KEY] = tenant
    create_content["room_version"] = rv.identifier
    if not rv.create_sender_is_creator:
        create_content["creator"] = creator
    if rv.privileged_creators and trusted:
        given = create_content.get("additional_creators")
        extra = [u for u in given if isinstance(u, str)] if isinstance(given, list) else []
        create_content["additional_creators"] = sorted(set(extra) | set(trusted))
    room_id = new_room_id(hs, rv)

    def fill(head: RoomHead, queue: Queue) -> None:
        queue("m.room.member", {"membership": "join", **profile}, creator)
        pl = default_power_levels(creator, rv.privileged_creators, [] if rv.privileged_creators else trusted)
        override = body.get("power_level_content_override") or {}
        pl.update(copy.deepcopy(override))
        if rv.privileged_creators:
            creators = auth_rules.room_creators(head.state[("m.room.create", "")])
            if isinstance(pl.get("users"), dict):  # anything else the auth rules refuse
                pl["users"] = {u: v for u, v in pl["users"].items() if u not in creators}
        queue("m.room.power_levels", pl)
        if alias:
            queue("m.room.canonical_alias", {"alias": alias})
        queue("m.room.join_rules", {"join_rule": preset["join_rule"]})
        queue("m.room.history_visibility", {"history_visibility": preset["history_visibility"]})
        if preset["guest"]:
            queue("m.room.guest_access", {"guest_access": preset["guest"]})
        for st in initial_state:
            queue(st["type"], st["content"], st.get("state_key", ""))
        if "name" in body:
            queue("m.room.name", {"name": body["name"]})
        if "topic" in body:
            queue("m.room.topic", {"topic": body["topic"]})
        for invitee in invites:
            content = {"membership": "invite"}
            if is_direct:
                content["is_direct"] = True
            queue("m.room.member", content, invitee)

    head = await commit_new_room(hs, creator, rv, create_content, room_id, fill)
    if alias:
        await hs.db.run(directory_store.create_alias, alias, head.room_id, creator)
    if visibility == "public":
        await set_published(hs, head.room_id, True)
    return head.room_id, alias
