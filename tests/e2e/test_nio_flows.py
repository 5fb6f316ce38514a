"""End-to-end flows driven by a real Matrix client (matrix-nio's AsyncClient) against the
real server process of the session-wide `server` fixture.

pytest-asyncio is not installed: each test is a plain function running its own
coroutine with `asyncio.run`. nio reports an error's `errcode` as `status_code` and keeps
the HTTP response in `transport_response`."""
from __future__ import annotations

import asyncio
import urllib.parse
from contextlib import asynccontextmanager

from nio import (
    AsyncClient,
    JoinedMembersResponse,
    JoinError,
    JoinResponse,
    LoginResponse,
    MessageDirection,
    RegisterResponse,
    RoomBanResponse,
    RoomCreateResponse,
    RoomDeleteAliasResponse,
    RoomGetEventResponse,
    RoomGetStateEventError,
    RoomGetStateEventResponse,
    RoomGetStateResponse,
    RoomGetVisibilityResponse,
    RoomInviteResponse,
    RoomKickResponse,
    RoomLeaveResponse,
    RoomMessagesResponse,
    RoomMessageText,
    RoomPreset,
    RoomPutAliasResponse,
    RoomPutStateResponse,
    RoomRedactError,
    RoomRedactResponse,
    RoomResolveAliasError,
    RoomResolveAliasResponse,
    RoomSendError,
    RoomSendResponse,
    RoomUnbanResponse,
    RoomVisibility,
)
from nio.responses import ProfileSetDisplayNameResponse

from tests.server_harness import Http

SERVER_NAME = "test.local"
PASSWORD = "correct horse battery staple"

# The spec's PublishedRoomsChunk (data/api/client-server/definitions/public_rooms_chunk.yaml).
CHUNK_FIELDS = {"canonical_alias", "name", "num_joined_members", "room_id", "topic",
                "world_readable", "guest_can_join", "avatar_url", "join_rule", "room_type"}
CHUNK_REQUIRED = {"room_id", "num_joined_members", "world_readable", "guest_can_join"}


def run(coro):
    return asyncio.run(coro)


async def new_user(base_url: str, localpart: str) -> AsyncClient:
    """Register with nio (dummy auth), then log in with the password as a new device;
    the returned client is the logged-in one."""
    reg = AsyncClient(base_url)
    try:
        r = await reg.register(localpart, PASSWORD, device_name="registration device")
        assert isinstance(r, RegisterResponse), r
        assert r.user_id == f"@{localpart}:{SERVER_NAME}"
        assert r.access_token and r.device_id
        reg_device = r.device_id
    finally:
        await reg.close()
    client = AsyncClient(base_url, localpart)
    r = await client.login(PASSWORD, device_name="e2e device")
    assert isinstance(r, LoginResponse), r
    assert r.user_id == f"@{localpart}:{SERVER_NAME}"
    assert r.device_id and r.device_id != reg_device
    assert client.user_id == r.user_id and client.access_token == r.access_token
    return client


@asynccontextmanager
async def users(server, unique, *names: str):
    clients = [await new_user(server.base_url, unique(n)) for n in names]
    try:
        yield clients
    finally:
        for c in clients:
            await c.close()


async def create_room(client: AsyncClient, **kwargs) -> str:
    r = await client.room_create(**kwargs)
    assert isinstance(r, RoomCreateResponse), r
    assert r.room_id.startswith("!")
    return r.room_id


async def invite_and_join(alice: AsyncClient, bob: AsyncClient, room_id: str) -> None:
    r = await alice.room_invite(room_id, bob.user_id)
    assert isinstance(r, RoomInviteResponse), r
    r = await bob.join(room_id)
    assert isinstance(r, JoinResponse), r
    assert r.room_id == room_id


async def send_text(client: AsyncClient, room_id: str, body: str):
    return await client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body})


async def assert_send_ok(client: AsyncClient, room_id: str, body: str) -> str:
    r = await send_text(client, room_id, body)
    assert isinstance(r, RoomSendResponse), r
    assert r.event_id.startswith("$")
    return r.event_id


async def assert_send_forbidden(client: AsyncClient, room_id: str, body: str) -> None:
    r = await send_text(client, room_id, body)
    assert isinstance(r, RoomSendError), r
    assert r.status_code == "M_FORBIDDEN", r
    assert r.transport_response.status == 403


async def membership_of(client: AsyncClient, room_id: str, user_id: str) -> str:
    r = await client.room_get_state_event(room_id, "m.room.member", user_id)
    assert isinstance(r, RoomGetStateEventResponse), r
    return r.content["membership"]


async def joined(client: AsyncClient, room_id: str) -> set[str]:
    r = await client.joined_members(room_id)
    assert isinstance(r, JoinedMembersResponse), r
    return {m.user_id for m in r.members}


async def http_error(r) -> tuple[int, str | None]:
    """(HTTP status, errcode) of a response, for nio responses that never turn into
    errors (RoomPutAliasResponse, RoomDeleteAliasResponse)."""
    body = await r.transport_response.json()
    return r.transport_response.status, body.get("errcode")


def _texts(events) -> list[RoomMessageText]:
    return [e for e in events if isinstance(e, RoomMessageText)]


# ---- 1. register, log in, room, invite, 100 messages, paginate both ways ----------------


async def _paginate(client: AsyncClient, room_id: str, direction: MessageDirection) -> list:
    """Every event `/messages` pages out in `direction` from its default start, 30 at a
    time, following `end` until it is omitted (each token new)."""
    events: list = []
    token = None
    for _ in range(50):
        r = await client.room_messages(room_id, start=token, limit=30, direction=direction)
        assert isinstance(r, RoomMessagesResponse), r
        assert len(r.chunk) <= 30
        events.extend(r.chunk)
        if not r.end:
            return events
        assert r.end != token
        token = r.end
    raise AssertionError(f"{direction.name} pagination never ended")


def test_hundred_messages_paginate_back_and_forth(server, unique):
    async def flow():
        async with users(server, unique, "alice", "bob") as (alice, bob):
            room_id = await create_room(alice, name="chatter")
            await invite_and_join(alice, bob, room_id)
            assert await joined(alice, room_id) == {alice.user_id, bob.user_id}

            sent = []  # (event_id, sender, body), oldest first
            for i in range(100):
                client = alice if i % 2 == 0 else bob
                body = f"message {i:03d}"
                sent.append((await assert_send_ok(client, room_id, body), client.user_id, body))
            assert len({e for e, _, _ in sent}) == 100

            # Backwards from the end of the timeline, following `end` until it is omitted.
            back_events = await _paginate(bob, room_id, MessageDirection.back)
            back_ids = [e.event_id for e in back_events]
            assert len(back_ids) == len(set(back_ids)), "an event came back twice"
            texts = _texts(back_events)
            assert [(e.event_id, e.sender, e.body) for e in texts] == sent[::-1]
            # The rest is the room's setup: it reaches back to the create event.
            assert back_events[-1].source["type"] == "m.room.create"
            assert back_ids[:100] == [e for e, _, _ in sent[::-1]]

            # Forwards from the earliest position, following `end` again.
            fwd_events = await _paginate(alice, room_id, MessageDirection.front)
            fwd_ids = [e.event_id for e in fwd_events]
            assert fwd_ids == back_ids[::-1]
            assert [(e.event_id, e.sender, e.body) for e in _texts(fwd_events)] == sent

            # Forwards from a token handed out mid-way by back pagination: the events
            # after it, in order, up to the newest. (This server's tokens exclude the
            # event they sit at in both directions, as Conduit's do; Synapse's back
            # tokens sit just before that event. Either is accepted here.)
            r = await alice.room_messages(room_id, limit=30, direction=MessageDirection.back)
            assert isinstance(r, RoomMessagesResponse) and r.end, r
            r2 = await alice.room_messages(room_id, start=r.end, limit=30,
                                           direction=MessageDirection.front)
            assert isinstance(r2, RoomMessagesResponse), r2
            ids = [e.event_id for e in r2.chunk]
            assert ids in ([e for e, _, _ in sent[-30:]], [e for e, _, _ in sent[-29:]]), ids
            # ...and back pagination bounded by `to` stops at that token.
            r3 = await alice.room_messages(room_id, end=r.end, limit=100,
                                           direction=MessageDirection.back)
            assert isinstance(r3, RoomMessagesResponse), r3
            assert [e.event_id for e in r3.chunk] == ids[::-1]

    run(flow())


# ---- 2. custom state --------------------------------------------------------------------


def test_custom_state_event(server, unique):
    async def flow():
        async with users(server, unique, "alice") as (alice,):
            room_id = await create_room(alice)
            content = {"colour": "teal", "n": 7, "nested": {"ok": True}}
            r = await alice.room_put_state(room_id, "org.example.widget", content, state_key="w1")
            assert isinstance(r, RoomPutStateResponse), r
            event_id = r.event_id
            assert event_id.startswith("$")

            r = await alice.room_get_state_event(room_id, "org.example.widget", "w1")
            assert isinstance(r, RoomGetStateEventResponse), r
            assert r.content == content

            # Another state key of the same type is a different, absent piece of state.
            r = await alice.room_get_state_event(room_id, "org.example.widget", "w2")
            assert isinstance(r, RoomGetStateEventError), r
            assert r.status_code == "M_NOT_FOUND"

            r = await alice.room_get_state(room_id)
            assert isinstance(r, RoomGetStateResponse), r
            found = [e for e in r.events if e["type"] == "org.example.widget"]
            assert len(found) == 1
            assert found[0]["state_key"] == "w1"
            assert found[0]["content"] == content
            assert found[0]["event_id"] == event_id
            assert found[0]["sender"] == alice.user_id

            # Replacing it: the new content is current, prev_content tells the old one.
            r = await alice.room_put_state(room_id, "org.example.widget", {"colour": "red"}, "w1")
            assert isinstance(r, RoomPutStateResponse), r
            r = await alice.room_get_state_event(room_id, "org.example.widget", "w1")
            assert isinstance(r, RoomGetStateEventResponse) and r.content == {"colour": "red"}, r
            r = await alice.room_get_state(room_id)
            found = [e for e in r.events if e["type"] == "org.example.widget"]
            assert len(found) == 1 and found[0]["content"] == {"colour": "red"}
            assert found[0]["unsigned"]["prev_content"] == content

    run(flow())


# ---- 3. a channel: only moderators speak ------------------------------------------------


def test_channel_room_events_default(server, unique):
    async def flow():
        async with users(server, unique, "alice", "bob") as (alice, bob):
            room_id = await create_room(alice, name="announcements",
                                        power_level_override={"events_default": 50})
            await invite_and_join(alice, bob, room_id)
            r = await alice.room_get_state_event(room_id, "m.room.power_levels")
            assert isinstance(r, RoomGetStateEventResponse), r
            assert r.content["events_default"] == 50
            assert r.content["state_default"] == 50  # the rest of the defaults stay

            await assert_send_forbidden(bob, room_id, "may I speak?")
            event_id = await assert_send_ok(alice, room_id, "announcement")

            r = await bob.room_messages(room_id, limit=10)
            assert isinstance(r, RoomMessagesResponse), r
            assert [(e.event_id, e.body) for e in _texts(r.chunk)] == [(event_id, "announcement")]

    run(flow())


# ---- 4. kick, ban, unban, leave ---------------------------------------------------------


def test_kick_ban_unban_leave(server, unique):
    async def flow():
        async with users(server, unique, "alice", "bob") as (alice, bob):
            room_id = await create_room(alice, visibility=RoomVisibility.public,
                                        preset=RoomPreset.public_chat)
            r = await bob.join(room_id)
            assert isinstance(r, JoinResponse), r
            await assert_send_ok(bob, room_id, "hello")

            # kick
            r = await alice.room_kick(room_id, bob.user_id, reason="cool down")
            assert isinstance(r, RoomKickResponse), r
            await assert_send_forbidden(bob, room_id, "still here?")
            assert await membership_of(alice, room_id, bob.user_id) == "leave"
            r = await alice.room_get_state_event(room_id, "m.room.member", bob.user_id)
            assert r.content.get("reason") == "cool down"
            assert bob.user_id not in await joined(alice, room_id)

            # a kicked user may come back to a public room
            r = await bob.join(room_id)
            assert isinstance(r, JoinResponse), r
            assert await membership_of(alice, room_id, bob.user_id) == "join"

            # bob can't kick or ban alice (power 0 < 50)
            r = await bob.room_kick(room_id, alice.user_id)
            assert not isinstance(r, RoomKickResponse) and r.status_code == "M_FORBIDDEN", r
            r = await bob.room_ban(room_id, alice.user_id)
            assert not isinstance(r, RoomBanResponse) and r.status_code == "M_FORBIDDEN", r

            # ban
            r = await alice.room_ban(room_id, bob.user_id, reason="spam")
            assert isinstance(r, RoomBanResponse), r
            assert await membership_of(alice, room_id, bob.user_id) == "ban"
            await assert_send_forbidden(bob, room_id, "let me in")
            r = await bob.join(room_id)
            assert isinstance(r, JoinError), r
            assert r.status_code == "M_FORBIDDEN"
            assert r.transport_response.status == 403
            assert await membership_of(alice, room_id, bob.user_id) == "ban"
            assert bob.user_id not in await joined(alice, room_id)

            # unban: back to leave, and the public room may be joined again
            r = await alice.room_unban(room_id, bob.user_id)
            assert isinstance(r, RoomUnbanResponse), r
            assert await membership_of(alice, room_id, bob.user_id) == "leave"
            r = await bob.join(room_id)
            assert isinstance(r, JoinResponse), r
            assert await joined(alice, room_id) == {alice.user_id, bob.user_id}
            await assert_send_ok(bob, room_id, "I'm back")

            # leave
            r = await bob.room_leave(room_id)
            assert isinstance(r, RoomLeaveResponse), r
            assert await joined(alice, room_id) == {alice.user_id}
            assert await membership_of(alice, room_id, bob.user_id) == "leave"
            await assert_send_forbidden(bob, room_id, "gone")

    run(flow())


def test_ban_then_unban_in_invite_only_room_needs_reinvite(server, unique):
    async def flow():
        async with users(server, unique, "alice", "bob") as (alice, bob):
            room_id = await create_room(alice)  # private_chat: invite only
            await invite_and_join(alice, bob, room_id)
            r = await alice.room_ban(room_id, bob.user_id)
            assert isinstance(r, RoomBanResponse), r
            # a banned user can't even be invited
            r = await alice.room_invite(room_id, bob.user_id)
            assert not isinstance(r, RoomInviteResponse) and r.status_code == "M_FORBIDDEN", r
            r = await alice.room_unban(room_id, bob.user_id)
            assert isinstance(r, RoomUnbanResponse), r
            r = await bob.join(room_id)  # invite-only, no invite yet
            assert isinstance(r, JoinError) and r.status_code == "M_FORBIDDEN", r
            await invite_and_join(alice, bob, room_id)
            assert await joined(alice, room_id) == {alice.user_id, bob.user_id}

    run(flow())


# ---- 5. aliases -------------------------------------------------------------------------


def test_alias_create_resolve_join_delete(server, unique):
    async def flow():
        async with users(server, unique, "alice", "bob") as (alice, bob):
            room_id = await create_room(alice, visibility=RoomVisibility.public,
                                        preset=RoomPreset.public_chat)
            alias = f"#{unique('lobby')}:{SERVER_NAME}"
            r = await alice.room_put_alias(alias, room_id)
            assert isinstance(r, RoomPutAliasResponse), r

            # the same alias can't be taken twice (nio's RoomPutAliasResponse never turns
            # into an error: look at the HTTP status)
            other_room = await create_room(alice)
            r = await alice.room_put_alias(alias, other_room)
            assert await http_error(r) == (409, "M_UNKNOWN")
            r = await bob.room_resolve_alias(alias)
            assert isinstance(r, RoomResolveAliasResponse) and r.room_id == room_id, r

            r = await bob.room_resolve_alias(alias)
            assert isinstance(r, RoomResolveAliasResponse), r
            assert r.room_id == room_id
            assert SERVER_NAME in r.servers

            r = await bob.join(alias)
            assert isinstance(r, JoinResponse), r
            assert r.room_id == room_id
            assert await joined(alice, room_id) == {alice.user_id, bob.user_id}

            # bob (not the alias creator, no power) may not delete it
            r = await bob.room_delete_alias(alias)
            assert await http_error(r) == (403, "M_FORBIDDEN")
            r = await bob.room_resolve_alias(alias)
            assert isinstance(r, RoomResolveAliasResponse) and r.room_id == room_id, r

            r = await alice.room_delete_alias(alias)
            assert isinstance(r, RoomDeleteAliasResponse), r
            assert r.transport_response.status == 200
            r = await bob.room_resolve_alias(alias)
            assert isinstance(r, RoomResolveAliasError), r
            assert r.status_code == "M_NOT_FOUND"
            assert r.transport_response.status == 404
            r = await alice.room_delete_alias(alias)
            assert await http_error(r) == (404, "M_NOT_FOUND")

            # joining by the deleted alias fails
            r = await bob.room_leave(room_id)
            assert isinstance(r, RoomLeaveResponse), r
            r = await bob.join(alias)
            assert isinstance(r, JoinError) and r.status_code == "M_NOT_FOUND", r

    run(flow())


# ---- 6. profile propagation -------------------------------------------------------------


def test_displayname_propagates_to_member_event(server, unique):
    async def flow():
        async with users(server, unique, "alice", "bob") as (alice, bob):
            room_id = await create_room(alice)
            await invite_and_join(alice, bob, room_id)

            r = await bob.set_displayname("Bobby Tables")
            assert isinstance(r, ProfileSetDisplayNameResponse), r
            r = await bob.get_displayname(bob.user_id)
            assert r.displayname == "Bobby Tables", r

            r = await alice.room_get_state_event(room_id, "m.room.member", bob.user_id)
            assert isinstance(r, RoomGetStateEventResponse), r
            assert r.content == {"membership": "join", "displayname": "Bobby Tables"}

            r = await alice.room_get_state(room_id)
            assert isinstance(r, RoomGetStateResponse), r
            members = [e for e in r.events
                       if e["type"] == "m.room.member" and e["state_key"] == bob.user_id]
            assert len(members) == 1
            assert members[0]["content"]["displayname"] == "Bobby Tables"
            assert members[0]["content"]["membership"] == "join"
            assert members[0]["sender"] == bob.user_id
            assert members[0]["unsigned"]["prev_content"]["membership"] == "join"
            assert members[0]["unsigned"]["prev_content"].get("displayname") != "Bobby Tables"

            r = await alice.joined_members(room_id)
            assert isinstance(r, JoinedMembersResponse), r
            names = {m.user_id: m.display_name for m in r.members}
            assert names[bob.user_id] == "Bobby Tables"

            # and again: a second change replaces the first
            r = await bob.set_displayname("Robert")
            assert isinstance(r, ProfileSetDisplayNameResponse), r
            r = await alice.room_get_state_event(room_id, "m.room.member", bob.user_id)
            assert r.content["displayname"] == "Robert", r

    run(flow())


# ---- 7. redaction -----------------------------------------------------------------------


def test_redaction_by_admin_and_refused_for_member(server, unique):
    async def flow():
        async with users(server, unique, "alice", "bob") as (alice, bob):
            room_id = await create_room(alice)
            await invite_and_join(alice, bob, room_id)
            bob_msg = await assert_send_ok(bob, room_id, "something regrettable")
            alice_msg = await assert_send_ok(alice, room_id, "alice speaks")

            r = await alice.room_redact(room_id, bob_msg, reason="rude")
            assert isinstance(r, RoomRedactResponse), r
            redaction_id = r.event_id

            r = await bob.room_redact(room_id, alice_msg)
            assert isinstance(r, RoomRedactError), r
            assert r.status_code == "M_FORBIDDEN"
            assert r.transport_response.status == 403

            for reader in (alice, bob):
                r = await reader.room_messages(room_id, limit=20)
                assert isinstance(r, RoomMessagesResponse), r
                by_id = {e.event_id: e.source for e in r.chunk}
                redacted = by_id[bob_msg]
                assert redacted["content"] == {}
                assert redacted["sender"] == bob.user_id
                assert redacted["type"] == "m.room.message"
                because = redacted["unsigned"]["redacted_because"]
                assert because["event_id"] == redaction_id
                assert because["sender"] == alice.user_id
                assert because["type"] == "m.room.redaction"
                assert because["content"].get("reason") == "rude"
                # alice's message is untouched
                assert by_id[alice_msg]["content"]["body"] == "alice speaks"
                assert "redacted_because" not in by_id[alice_msg].get("unsigned", {})
                # the redaction event itself is in the timeline
                assert by_id[redaction_id]["type"] == "m.room.redaction"
                assert by_id[redaction_id]["redacts"] == bob_msg

            # fetched on its own, the event is redacted too
            r = await bob.room_get_event(room_id, bob_msg)
            assert isinstance(r, RoomGetEventResponse), r
            assert r.event.source["content"] == {}
            assert r.event.source["unsigned"]["redacted_because"]["event_id"] == redaction_id

            # bob may redact his own message
            own = await assert_send_ok(bob, room_id, "typo")
            r = await bob.room_redact(room_id, own)
            assert isinstance(r, RoomRedactResponse), r
            r = await alice.room_messages(room_id, limit=5)
            assert {e.event_id: e.source for e in r.chunk}[own]["content"] == {}

    run(flow())


# ---- 8. public room directory -----------------------------------------------------------


def test_public_room_directory(server, unique):
    async def flow():
        async with users(server, unique, "alice", "bob") as (alice, bob):
            alias_local = unique("pub")
            topic = unique("topic")
            room_id = await create_room(alice, visibility=RoomVisibility.public,
                                        alias=alias_local, name="Public Square", topic=topic)
            private_id = await create_room(alice, name="Secret")
            r = await bob.join(room_id)
            assert isinstance(r, JoinResponse), r

            r = await alice.room_get_visibility(room_id)
            assert isinstance(r, RoomGetVisibilityResponse), r
            assert r.visibility == "public"
            r = await alice.room_get_visibility(private_id)
            assert isinstance(r, RoomGetVisibilityResponse), r
            assert r.visibility == "private"

            return room_id, private_id, alias_local, topic, alice.access_token

    room_id, private_id, alias_local, topic, token = run(flow())
    http = Http(server.base_url)

    def find_all(method: str, body=None) -> list[dict]:
        chunks, since = [], None
        for _ in range(100):
            if method == "GET":
                q = "?limit=5" + (f"&since={urllib.parse.quote(since)}" if since else "")
                status, page = http.request("GET", "/_matrix/client/v3/publicRooms" + q)
            else:
                req = dict(body or {}, limit=5)
                if since:
                    req["since"] = since
                status, page = http.request("POST", "/_matrix/client/v3/publicRooms", req,
                                            token=token)
            assert status == 200, page
            assert isinstance(page["chunk"], list) and len(page["chunk"]) <= 5
            chunks.extend(page["chunk"])
            since = page.get("next_batch")
            if not since:
                return chunks
        raise AssertionError("publicRooms pagination never ended")

    listed = find_all("GET")
    ids = [c["room_id"] for c in listed]
    assert len(ids) == len(set(ids))
    assert private_id not in ids
    mine = [c for c in listed if c["room_id"] == room_id]
    assert len(mine) == 1
    chunk = mine[0]
    assert set(chunk) <= CHUNK_FIELDS, set(chunk) - CHUNK_FIELDS
    assert CHUNK_REQUIRED <= set(chunk)
    assert chunk == {
        "room_id": room_id,
        "num_joined_members": 2,
        "world_readable": False,
        "guest_can_join": False,
        "join_rule": "public",
        "name": "Public Square",
        "topic": topic,
        "canonical_alias": f"#{alias_local}:{SERVER_NAME}",
    }
    for c in listed:
        assert set(c) <= CHUNK_FIELDS and CHUNK_REQUIRED <= set(c), c

    # the search filter finds it by topic
    found = find_all("POST", {"filter": {"generic_search_term": topic}})
    assert [c["room_id"] for c in found] == [room_id]

    # unpublishing removes it
    status, body = http.request("PUT", f"/_matrix/client/v3/directory/list/room/{room_id}",
                                {"visibility": "private"}, token=token)
    assert status == 200, body
    assert room_id not in [c["room_id"] for c in find_all("GET")]
