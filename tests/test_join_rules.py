"""Knocking and restricted joins end to end: POST /knock by id and alias (matrix-nio's
room_knock too), the knocker's /sync `rooms.knock` section, the moderator's view of the
knock, accept (invite, then join), deny (kick), rescind (leave); joins of restricted and
knock_restricted rooms by members of an allowed room; refusals, bad input, and the
tenant wall (a knock on another tenant's room answers like one on a missing room)."""
from __future__ import annotations

import asyncio

import pytest
from nio import AsyncClient, RoomKnockResponse, SyncResponse

from tests.tenant_world import V3, create_room, put_state, running_world, sync

SERVER = "test.local"


def _restricted(rule: str, *rooms: str) -> dict:
    return {"type": "m.room.join_rules", "state_key": "",
            "content": {"join_rule": rule, "allow": [{"type": "m.room_membership", "room_id": r} for r in rooms]}}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with running_world(tmp_path_factory.mktemp("join-rules")) as w:
        users = {n: w.user(n, "acme") for n in ("alice", "carol", "dave", "erin", "frank")}
        users["bob"] = w.user("bob", "globex")
        alice = users["alice"]
        space = create_room(alice, name="Acme", creation_content={"type": "m.space"})
        for name in ("carol", "frank"):
            assert alice.request("POST", f"{V3}/rooms/{space}/invite", {"user_id": users[name].user_id})[0] == 200
            assert users[name].request("POST", f"{V3}/rooms/{space}/join", {})[0] == 200
        yield w, users, space


def _knock(user, target: str, body=None) -> tuple[int, dict]:
    return user.request("POST", f"{V3}/knock/{target}", {} if body is None else body)


def _member(user, room_id: str, target: str) -> dict:
    status, content = user.request("GET", f"{V3}/rooms/{room_id}/state/m.room.member/{target}")
    assert status == 200, content
    return content


def _timeline(body: dict, room_id: str) -> list[dict]:
    return body["rooms"]["join"].get(room_id, {}).get("timeline", {}).get("events", [])


def test_knock_accepted_by_invite_then_join(world):
    _, u, _ = world
    alice, carol = u["alice"], u["carol"]
    room = create_room(alice, name="Deals", topic="where deals happen", room_alias_name="deals",
                       initial_state=[{"type": "m.room.join_rules", "state_key": "",
                                       "content": {"join_rule": "knock"}}])
    mod_since = sync(alice)["next_batch"]
    knocker_since = sync(carol)["next_batch"]
    status, body = _knock(carol, room, {"reason": "I sell things"})
    assert status == 200 and body == {"room_id": room}
    # The knocker sees the room in rooms.knock with stripped state, her knock included.
    after = sync(carol, knocker_since)
    state = after["rooms"]["knock"][room]["knock_state"]["events"]
    by_type = {(e["type"], e["state_key"]): e for e in state}
    assert by_type[("m.room.member", carol.user_id)]["content"]["membership"] == "knock"
    assert by_type[("m.room.member", carol.user_id)]["content"]["reason"] == "I sell things"
    assert by_type[("m.room.join_rules", "")]["content"]["join_rule"] == "knock"
    assert by_type[("m.room.name", "")]["content"]["name"] == "Deals"
    assert all(set(e) == {"type", "state_key", "content", "sender"} for e in state)
    assert room not in after["rooms"]["join"] and room not in after["rooms"]["invite"]
    assert room in sync(carol)["rooms"]["knock"]  # an initial sync shows it too
    # The moderator sees the knock in the room's timeline.
    knocks = [e for e in _timeline(sync(alice, mod_since), room) if e["type"] == "m.room.member"]
    assert [(e["state_key"], e["content"]["membership"], e["content"].get("reason")) for e in knocks] == [
        (carol.user_id, "knock", "I sell things")]
    # Accept: an invite, which moves the room to the knocker's invites, then she joins.
    knocker_since = after["next_batch"]
    assert alice.request("POST", f"{V3}/rooms/{room}/invite", {"user_id": carol.user_id})[0] == 200
    after = sync(carol, knocker_since)
    assert room in after["rooms"]["invite"] and room not in after["rooms"]["knock"]
    assert carol.request("POST", f"{V3}/join/{room}", {})[0] == 200
    assert _member(alice, room, carol.user_id)["membership"] == "join"
    assert room not in sync(carol)["rooms"]["knock"]


def test_knock_denied_by_kick_and_rescinded_by_leave(world):
    _, u, _ = world
    alice, dave, erin = u["alice"], u["dave"], u["erin"]
    room = create_room(alice, room_alias_name="support", initial_state=[
        {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}])
    # Knocking by alias (in acme's part of the alias space) answers with the room id.
    assert _knock(dave, f"%23acme.support:{SERVER}") == (200, {"room_id": room})
    since = sync(dave)["next_batch"]
    # A moderator denies a knock with the kick endpoint.
    assert alice.request("POST", f"{V3}/rooms/{room}/kick", {"user_id": dave.user_id, "reason": "no"})[0] == 200
    after = sync(dave, since)
    assert room not in after["rooms"]["knock"]
    leave_events = after["rooms"]["leave"][room]["timeline"]["events"]
    assert [(e["state_key"], e["content"]["membership"], e["sender"]) for e in leave_events] == [
        (dave.user_id, "leave", alice.user_id)]
    # Denied is not banned: dave may knock again. erin knocks and takes it back.
    assert _knock(dave, room)[0] == 200
    assert _knock(erin, room)[0] == 200
    erin_since = sync(erin)["next_batch"]
    assert erin.request("POST", f"{V3}/rooms/{room}/leave", {})[0] == 200
    assert _member(alice, room, erin.user_id)["membership"] == "leave"
    after = sync(erin, erin_since)
    assert room in after["rooms"]["leave"] and room not in after["rooms"]["knock"]
    # Knocking while knocking, joined, invited or banned, or on a room that takes no knocks.
    assert _knock(dave, room)[0] == 200  # a second knock just asks again
    status, body = _knock(alice, room)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    assert alice.request("POST", f"{V3}/rooms/{room}/ban", {"user_id": erin.user_id})[0] == 200
    assert _knock(erin, room)[0] == 403
    for preset in ("private_chat", "public_chat"):
        other = create_room(alice, preset=preset)
        status, body = _knock(dave, other)
        assert status == 403 and body["errcode"] == "M_FORBIDDEN", body


def test_matrix_nio_knocks(world):
    w, u, _ = world
    room = create_room(u["alice"], initial_state=[
        {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}])

    async def go():
        client = AsyncClient(w.srv.base_url, u["frank"].user_id)
        client.access_token, client.user_id = u["frank"].token, u["frank"].user_id
        try:
            knocked = await client.room_knock(room, reason="hello")
            return knocked, await client.sync(timeout=0)
        finally:
            await client.close()

    response, synced = asyncio.run(go())
    assert isinstance(response, RoomKnockResponse) and response.room_id == room
    assert isinstance(synced, SyncResponse), synced  # nio takes a sync with rooms.knock
    member = _member(u["alice"], room, u["frank"].user_id)
    assert (member["membership"], member["reason"]) == ("knock", "hello")


def test_knock_across_tenants_is_answered_like_a_missing_room(world):
    _, u, _ = world
    room = create_room(u["alice"], room_alias_name="acme-knock", initial_state=[
        {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}])
    missing = _knock(u["bob"], "!missing:test.local")
    assert missing[0] == 403 and missing[1]["errcode"] == "M_FORBIDDEN"
    assert _knock(u["bob"], room) == missing
    assert _knock(u["carol"], "!missing:test.local") == missing
    # An alias of acme's part of the alias space: refused alike, whether or not it exists.
    missing_alias = _knock(u["bob"], f"%23acme.nothing-here:{SERVER}")
    assert missing_alias[0] == 403 and missing_alias[1]["errcode"] == "M_FORBIDDEN"
    assert _knock(u["bob"], f"%23acme.acme-knock:{SERVER}") == missing_alias
    # In bob's own part a missing alias is simply missing.
    status, body = _knock(u["bob"], f"%23globex.nothing-here:{SERVER}")
    assert (status, body["errcode"]) == (404, "M_NOT_FOUND")
    # Nothing reached the room.
    status, members = u["alice"].request("GET", f"{V3}/rooms/{room}/members")
    assert u["bob"].user_id not in {e["state_key"] for e in members["chunk"]}


@pytest.mark.parametrize("body,raw,errcode", [
    ({"reason": 42}, None, "M_BAD_JSON"),
    (None, b"{not json", "M_NOT_JSON"),
    (None, b"[1, 2]", "M_BAD_JSON"),
])
def test_knock_bad_input(world, body, raw, errcode):
    _, u, _ = world
    room = create_room(u["alice"], initial_state=[
        {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}}])
    status, answer = u["dave"].request("POST", f"{V3}/knock/{room}", body, raw=raw)
    assert status == 400 and answer["errcode"] == errcode, answer
    for target in ("not-a-room", "%23no-server", "%23"):
        status, answer = _knock(u["dave"], target)
        assert status == 400 and answer["errcode"] == "M_INVALID_PARAM", answer


def test_restricted_join_for_members_of_an_allowed_room(world):
    _, u, space = world
    alice, carol, erin = u["alice"], u["carol"], u["erin"]
    room = create_room(alice, name="Team", initial_state=[_restricted("restricted", space)])
    assert carol.request("POST", f"{V3}/rooms/{room}/join", {})[0] == 200
    member = _member(alice, room, carol.user_id)
    assert member["membership"] == "join"
    assert member["join_authorised_via_users_server"] == alice.user_id
    # erin is in no allowed room: refused, and she may not knock on a restricted room.
    status, body = erin.request("POST", f"{V3}/join/{room}", {})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN", body
    assert _knock(erin, room)[0] == 403
    # An invite still lets anyone of the tenant in.
    assert alice.request("POST", f"{V3}/rooms/{room}/invite", {"user_id": erin.user_id})[0] == 200
    assert erin.request("POST", f"{V3}/rooms/{room}/join", {})[0] == 200
    assert "join_authorised_via_users_server" not in _member(alice, room, erin.user_id)
    # Leaving the space ends the right to join: frank leaves it before trying.
    frank = u["frank"]
    assert frank.request("POST", f"{V3}/rooms/{space}/leave", {})[0] == 200
    assert frank.request("POST", f"{V3}/rooms/{room}/join", {})[0] == 403
    assert alice.request("POST", f"{V3}/rooms/{space}/invite", {"user_id": frank.user_id})[0] == 200
    assert frank.request("POST", f"{V3}/rooms/{space}/join", {})[0] == 200
    assert frank.request("POST", f"{V3}/rooms/{room}/join", {})[0] == 200


def test_knock_restricted_room(world):
    _, u, space = world
    alice, carol, dave = u["alice"], u["carol"], u["dave"]
    room = create_room(alice, initial_state=[_restricted("knock_restricted", "!elsewhere:other.test", space)])
    assert carol.request("POST", f"{V3}/join/{room}", {})[0] == 200  # in the space: straight in
    status, body = dave.request("POST", f"{V3}/join/{room}", {})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    assert _knock(dave, room)[0] == 200  # not in the space: knock instead
    assert _member(carol, room, dave.user_id)["membership"] == "knock"
    assert alice.request("POST", f"{V3}/rooms/{room}/invite", {"user_id": dave.user_id})[0] == 200
    assert dave.request("POST", f"{V3}/join/{room}", {})[0] == 200


def test_restricted_join_needs_a_member_who_may_invite(world):
    _, u, space = world
    alice, carol = u["alice"], u["carol"]
    # Room version 11: creators have no implied power, so alice can hand hers away.
    room = create_room(alice, room_version="11", initial_state=[_restricted("restricted", space)],
                       power_level_content_override={"invite": 100})
    put_state(alice, room, "m.room.power_levels", {"users": {}, "invite": 100})
    status, body = carol.request("POST", f"{V3}/rooms/{room}/join", {})
    assert status == 403 and body["errcode"] == "M_FORBIDDEN", body
