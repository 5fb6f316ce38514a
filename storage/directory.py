"""Room aliases and the public room directory."""
from __future__ import annotations

import json

from storage.database import Cursor


def create_alias(cur: Cursor, alias: str, room_id: str, creator: str) -> bool:
    cur.execute("INSERT INTO room_aliases (room_alias, room_id, creator) VALUES (%s, %s, %s)"
                " ON CONFLICT DO NOTHING", (alias, room_id, creator))
    return cur.rowcount == 1


def get_alias(cur: Cursor, alias: str) -> tuple[str, str] | None:
    cur.execute("SELECT room_id, creator FROM room_aliases WHERE room_alias = %s", (alias,))
    row = cur.fetchone()
    return (row[0], row[1]) if row else None


def delete_alias(cur: Cursor, alias: str) -> None:
    cur.execute("DELETE FROM room_aliases WHERE room_alias = %s", (alias,))


def aliases_for_room(cur: Cursor, room_id: str) -> list[str]:
    cur.execute("SELECT room_alias FROM room_aliases WHERE room_id = %s ORDER BY room_alias", (room_id,))
    return [r[0] for r in cur.fetchall()]


def set_room_public(cur: Cursor, room_id: str, public: bool) -> None:
    cur.execute("UPDATE rooms SET is_public = %s WHERE room_id = %s", (public, room_id))


def get_room_public(cur: Cursor, room_id: str) -> bool | None:
    cur.execute("SELECT is_public FROM rooms WHERE room_id = %s", (room_id,))
    row = cur.fetchone()
    return row[0] if row else None


_DIRECTORY_STATE = ("m.room.name", "m.room.topic", "m.room.canonical_alias", "m.room.avatar",
                    "m.room.join_rules", "m.room.history_visibility", "m.room.guest_access",
                    "m.room.create")


def set_appservice_room_list(cur: Cursor, as_id: str, network_id: str, room_id: str, public: bool) -> None:
    if public:
        cur.execute("INSERT INTO appservice_room_list (as_id, network_id, room_id) VALUES (%s, %s, %s)"
                    " ON CONFLICT DO NOTHING", (as_id, network_id, room_id))
    else:
        cur.execute("DELETE FROM appservice_room_list WHERE as_id = %s AND network_id = %s AND room_id = %s",
                    (as_id, network_id, room_id))


def public_rooms(cur: Cursor, search: str | None, offset: int, limit: int, tenant: str | None,
                 network: tuple[str, str] | None = None, all_networks: bool = False) -> tuple[list[dict], int]:
    """Published rooms of one tenant (or tenant-less ones) with the directory fields taken
    from current state, biggest first. Published means: in the homeserver's own directory;
    with `network` (application service id, network id) in that network's directory
    instead; with `all_networks` in either."""
    in_network = "EXISTS (SELECT 1 FROM appservice_room_list l WHERE l.room_id = r.room_id{})"
    params: list = []
    if network is not None:
        published = in_network.format(" AND l.as_id = %s AND l.network_id = %s")
        params += list(network)
    elif all_networks:
        published = f"(r.is_public OR {in_network.format('')})"
    else:
        published = "r.is_public"
    cur.execute(
        "SELECT r.room_id, (SELECT count(*) FROM current_state m WHERE m.room_id = r.room_id"
        "  AND m.type = 'm.room.member' AND m.membership = 'join') AS joined"
        f" FROM rooms r WHERE {published} AND r.tenant_id IS NOT DISTINCT FROM %s"
        " ORDER BY joined DESC, r.room_id", (*params, tenant)
    )
    rooms = cur.fetchall()
    if not rooms:
        return [], 0
    ids = [r[0] for r in rooms]
    cur.execute(
        "SELECT c.room_id, c.type, e.json FROM current_state c JOIN events e USING (event_id)"
        " WHERE c.room_id = ANY(%s) AND c.type = ANY(%s) AND c.state_key = ''",
        (ids, list(_DIRECTORY_STATE)),
    )
    state: dict[str, dict[str, dict]] = {}
    for room_id, etype, js in cur.fetchall():
        state.setdefault(room_id, {})[etype] = json.loads(js).get("content", {})
    chunks = []
    for room_id, joined in rooms:
        chunk = directory_chunk(room_id, joined, state.get(room_id, {}))
        if search and not _matches(chunk, search):
            continue
        chunks.append(chunk)
    return chunks[offset:offset + limit], len(chunks)


def directory_chunk(room_id: str, joined: int, st: dict[str, dict]) -> dict:
    # Exactly the fields of the spec's PublishedRoomsChunk: strict clients validate them.
    chunk: dict = {
        "room_id": room_id,
        "num_joined_members": joined,
        "world_readable": st.get("m.room.history_visibility", {}).get("history_visibility") == "world_readable",
        "guest_can_join": st.get("m.room.guest_access", {}).get("guest_access") == "can_join",
        "join_rule": st.get("m.room.join_rules", {}).get("join_rule", "invite"),
    }
    for field, etype, key in (("name", "m.room.name", "name"), ("topic", "m.room.topic", "topic"),
                              ("canonical_alias", "m.room.canonical_alias", "alias"),
                              ("avatar_url", "m.room.avatar", "url")):
        value = st.get(etype, {}).get(key)
        if isinstance(value, str) and value:
            chunk[field] = value
    room_type = st.get("m.room.create", {}).get("type")
    if isinstance(room_type, str):
        chunk["room_type"] = room_type
    return chunk


def _matches(chunk: dict, term: str) -> bool:
    term = term.lower()
    return any(term in str(chunk.get(k, "")).lower() for k in ("name", "topic", "canonical_alias", "room_id"))


def move_aliases(cur: Cursor, old_room_id: str, new_room_id: str) -> None:
    """A room upgrade hands every local alias of the old room to its replacement."""
    cur.execute("UPDATE room_aliases SET room_id = %s WHERE room_id = %s", (new_room_id, old_room_id))
