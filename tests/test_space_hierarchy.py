"""GET /_matrix/client/v1/rooms/{roomId}/hierarchy as Element's space panel and matrix-nio
ask for it: the depth-first walk in the spec's child order, the summary fields, who may
see which room, suggested_only, max_depth, pagination with `from`, bad input, and the
tenant wall (another tenant's rooms are absent; their roots answer like missing rooms)."""
from __future__ import annotations

import asyncio
import time

import pytest
from nio import AsyncClient, SpaceGetHierarchyResponse

from tests.tenant_world import V1, V3, create_room, put_state, running_world

SERVER = "test.local"
SUMMARY_REQUIRED = {"room_id", "num_joined_members", "world_readable", "guest_can_join", "children_state"}
SUMMARY_FIELDS = SUMMARY_REQUIRED | {"canonical_alias", "name", "topic", "avatar_url", "join_rule",
                                     "room_type", "allowed_room_ids", "encryption", "room_version"}


def _child(user, space: str, room: str, **extra) -> None:
    put_state(user, space, "m.space.child", {"via": [SERVER], **extra}, room)
    time.sleep(0.005)  # children without `order` sort by their event's timestamp


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """acme's space S:  R1 (public, suggested, order "a"), SS (a sub-space, restricted to S,
    suggested, order "b") holding R4 (knock) and S again (a loop), R3 (restricted to S),
    R2 (alice only), bob's globex room, a remote room and a removed child."""
    with running_world(tmp_path_factory.mktemp("hierarchy")) as world:
        alice, carol, erin = (world.user(n, "acme") for n in ("alice", "carol", "erin"))
        bob = world.user("bob", "globex")
        restricted = lambda room: {"join_rule": "restricted",  # noqa: E731
                                   "allow": [{"type": "m.room_membership", "room_id": room}]}
        s = create_room(alice, name="Acme", topic="All of acme", creation_content={"type": "m.space"},
                        room_alias_name="acme-space")
        r1 = create_room(alice, preset="public_chat", name="General")
        r2 = create_room(alice, name="Board")
        r3 = create_room(alice, name="Team", initial_state=[
            {"type": "m.room.join_rules", "state_key": "", "content": restricted(s)}])
        ss = create_room(alice, name="Sales", creation_content={"type": "m.space"}, initial_state=[
            {"type": "m.room.join_rules", "state_key": "", "content": restricted(s)}])
        r4 = create_room(alice, name="Deals", initial_state=[
            {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}])
        g = create_room(bob, preset="public_chat", name="Globex hall")
        _child(alice, s, r3)
        _child(alice, s, r2)
        _child(alice, s, ss, order="b", suggested=True)
        _child(alice, s, r1, order="a", suggested=True)
        _child(alice, s, g)
        _child(alice, s, "!remote:elsewhere.test")
        put_state(alice, s, "m.space.child", {}, r4)  # a removed child
        _child(alice, ss, r4)
        _child(alice, ss, s)
        assert alice.request("POST", f"{V3}/rooms/{s}/invite", {"user_id": carol.user_id})[0] == 200
        assert carol.request("POST", f"{V3}/join/{s}", {})[0] == 200
        yield {"world": world, "alice": alice, "carol": carol, "erin": erin, "bob": bob,
               "S": s, "R1": r1, "R2": r2, "R3": r3, "SS": ss, "R4": r4, "G": g}


def _hierarchy(user, room_id: str, query: str = "") -> tuple[int, dict]:
    return user.request("GET", f"{V1}/rooms/{room_id}/hierarchy{query}")


def _ids(t: dict, body: dict) -> list[str]:
    names = {v: k for k, v in t.items() if isinstance(v, str)}
    return [names.get(r["room_id"], r["room_id"]) for r in body["rooms"]]


def test_walk_order_visibility_and_summaries(tree):
    t = tree
    status, body = _hierarchy(t["carol"], t["S"])
    assert status == 200, body
    # Depth first, children in the spec's order: `order` values, then timestamps. R2
    # (invite-only), bob's room, the remote and the removed child are absent; the loop
    # back to S is walked once.
    assert _ids(t, body) == ["S", "R1", "SS", "R4", "R3"]
    assert "next_batch" not in body
    rooms = {r["room_id"]: r for r in body["rooms"]}
    for room in rooms.values():
        assert SUMMARY_REQUIRED <= room.keys() <= SUMMARY_FIELDS, room
    space = rooms[t["S"]]
    assert space["room_type"] == "m.space" and space["name"] == "Acme" and space["topic"] == "All of acme"
    assert space["canonical_alias"] == f"#acme.acme-space:{SERVER}"  # acme's part of the alias space
    assert space["num_joined_members"] == 2 and space["join_rule"] == "invite"
    assert space["world_readable"] is False and space["room_version"] == "12"
    children = space["children_state"]
    # Every child with a valid `via`, stripped, in order; the removed one is gone.
    assert [c["state_key"] for c in children[:3]] == [t["R1"], t["SS"], t["R3"]]
    assert {c["state_key"] for c in children} == {t["R1"], t["SS"], t["R3"], t["R2"], t["G"],
                                                  "!remote:elsewhere.test"}
    assert children[0] == {"type": "m.space.child", "state_key": t["R1"], "sender": t["alice"].user_id,
                           "content": {"via": [SERVER], "order": "a", "suggested": True},
                           "origin_server_ts": children[0]["origin_server_ts"]}
    assert rooms[t["R3"]]["allowed_room_ids"] == [t["S"]] and rooms[t["R3"]]["join_rule"] == "restricted"
    assert rooms[t["R1"]]["join_rule"] == "public" and rooms[t["R1"]]["children_state"] == []
    assert rooms[t["R4"]]["join_rule"] == "knock"
    assert "allowed_room_ids" not in rooms[t["R1"]]
    # Alice is in R2 and sees it.
    status, body = _hierarchy(t["alice"], t["S"])
    assert _ids(t, body) == ["S", "R1", "SS", "R4", "R3", "R2"]


def test_suggested_only_and_max_depth(tree):
    t = tree
    _, body = _hierarchy(t["carol"], t["S"], "?suggested_only=true")
    assert _ids(t, body) == ["S", "R1", "SS"]  # SS's child R4 is not suggested
    assert [c["state_key"] for c in body["rooms"][0]["children_state"]] == [t["R1"], t["SS"]]
    _, body = _hierarchy(t["carol"], t["S"], "?max_depth=1")
    assert _ids(t, body) == ["S", "R1", "SS", "R3"]
    assert body["rooms"][2]["children_state"]  # listed, though not walked into
    _, body = _hierarchy(t["carol"], t["S"], "?max_depth=0")
    assert _ids(t, body) == ["S"]
    _, body = _hierarchy(t["carol"], t["SS"])  # any space can be the root
    assert _ids(t, body) == ["SS", "R4", "S", "R1", "R3"]


def test_pagination_with_from(tree):
    t = tree
    pages, token = [], None
    while True:
        status, body = _hierarchy(t["carol"], t["S"], "?limit=2" + (f"&from={token}" if token else ""))
        assert status == 200, body
        pages.append(_ids(t, body))
        token = body.get("next_batch")
        if token is None:
            break
    assert pages == [["S", "R1"], ["SS", "R4"], ["R3"]]
    _, first = _hierarchy(t["carol"], t["S"], "?limit=2&max_depth=1")
    token = first["next_batch"]
    _, second = _hierarchy(t["carol"], t["S"], f"?limit=2&max_depth=1&from={token}")
    assert _ids(t, second) == ["SS", "R3"] and "next_batch" not in second
    # The filters are pinned for the whole pagination.
    for query in (f"?limit=2&from={token}", f"?limit=2&max_depth=1&suggested_only=true&from={token}"):
        status, body = _hierarchy(t["carol"], t["S"], query)
        assert status == 400 and body["errcode"] == "M_INVALID_PARAM", body


@pytest.mark.parametrize("query", ["?limit=0", "?limit=-3", "?limit=many", "?max_depth=-1",
                                   "?max_depth=deep", "?suggested_only=maybe", "?from=garbage",
                                   "?from=1_0_-_x", "?from=-1_0_-"])
def test_bad_parameters_are_invalid_param(tree, query):
    status, body = _hierarchy(tree["carol"], tree["S"], query)
    assert status == 400 and body["errcode"] == "M_INVALID_PARAM", body


def test_who_may_see_the_root(tree):
    t = tree
    missing = _hierarchy(t["carol"], "!missing:test.local")
    assert missing[0] == 403 and missing[1]["errcode"] == "M_FORBIDDEN"
    # erin is in acme but not in the invite-only space; bob is in another tenant: both are
    # answered exactly as for a room that does not exist.
    assert _hierarchy(t["erin"], t["S"]) == missing
    assert _hierarchy(t["bob"], t["S"]) == missing
    assert _hierarchy(t["bob"], t["R1"]) == missing  # public, but acme's
    assert _hierarchy(t["carol"], t["G"]) == missing  # public, but globex's
    for odd in ("not-a-room", "%21", "%00"):
        assert _hierarchy(t["carol"], odd) == missing
    # erin may see the public room R1 (a root need not be a space).
    status, body = _hierarchy(t["erin"], t["R1"])
    assert status == 200 and _ids(t, body) == ["R1"]
    # A globex space listing an acme room shows bob nothing of acme.
    bob_space = create_room(t["bob"], creation_content={"type": "m.space"})
    _child(t["bob"], bob_space, t["R1"])
    _child(t["bob"], bob_space, t["G"])
    _, body = _hierarchy(t["bob"], bob_space)
    assert [r["room_id"] for r in body["rooms"]] == [bob_space, t["G"]]


def test_restricted_child_needs_membership_of_an_allowed_room(tree):
    t = tree
    # erin joins the public R1, which SS does not admit: SS stays hidden from a space
    # erin can see. A space of erin's own listing SS and R3 shows neither.
    erin_space = create_room(t["erin"], creation_content={"type": "m.space"})
    for room in (t["SS"], t["R3"], t["R1"]):
        _child(t["erin"], erin_space, room)
    _, body = _hierarchy(t["erin"], erin_space)
    assert _ids(t, body) == [erin_space, "R1"]
    # Once erin is in S, the rooms restricted to S show up.
    assert t["alice"].request("POST", f"{V3}/rooms/{t['S']}/invite", {"user_id": t["erin"].user_id})[0] == 200
    assert t["erin"].request("POST", f"{V3}/rooms/{t['S']}/join", {})[0] == 200
    _, body = _hierarchy(t["erin"], erin_space)
    assert _ids(t, body) == [erin_space, "SS", "R4", "S", "R1", "R3"]


def test_matrix_nio_reads_the_hierarchy(tree):
    t = tree

    async def go():
        client = AsyncClient(t["world"].srv.base_url, t["carol"].user_id)
        client.access_token, client.user_id = t["carol"].token, t["carol"].user_id
        try:
            first = await client.space_get_hierarchy(t["S"], limit=2)
            assert isinstance(first, SpaceGetHierarchyResponse), first  # nio validated the schema
            rest = await client.space_get_hierarchy(t["S"], from_page=first.next_batch, limit=10)
            assert isinstance(rest, SpaceGetHierarchyResponse), rest
            suggested = await client.space_get_hierarchy(t["S"], suggested_only=True)
            assert isinstance(suggested, SpaceGetHierarchyResponse), suggested
            return first.rooms + rest.rooms, suggested.rooms
        finally:
            await client.close()

    rooms, suggested = asyncio.run(go())
    assert [r["room_id"] for r in rooms] == [t[k] for k in ("S", "R1", "SS", "R4", "R3")]
    assert [r["room_id"] for r in suggested] == [t[k] for k in ("S", "R1", "SS")]
