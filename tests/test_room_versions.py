"""Local rooms of every room version (1 to 12), driven by matrix-nio: create, send,
redact, invite and join a second user, read /messages and /sync; the capabilities
advertise exactly the versions served; and each version's event format and rules as
a client sees them."""
from __future__ import annotations

import asyncio
import re
import urllib.parse

import pytest
from nio import (
    AsyncClient,
    RedactedEvent,
    RoomCreateResponse,
    RoomMessagesResponse,
    RoomPutStateError,
    RoomPutStateResponse,
    SyncResponse,
)

from homeserver.room_versions import KNOWN_ROOM_VERSIONS
from tests.server_harness import Http

V3 = "/_matrix/client/v3"
ALL_VERSIONS = list(KNOWN_ROOM_VERSIONS)

# What each version's event ids look like.
LEGACY_ID = re.compile(r"\$[A-Za-z0-9]+:test\.local")     # v1, v2: $opaque:server
STANDARD_B64_ID = re.compile(r"\$[A-Za-z0-9+/]{43}")      # v3: reference hash, base64
URLSAFE_B64_ID = re.compile(r"\$[A-Za-z0-9_\-]{43}")      # v4+: URL-safe base64


def _id_pattern(version: str) -> re.Pattern:
    n = int(version)
    return LEGACY_ID if n <= 2 else STANDARD_B64_ID if n == 3 else URLSAFE_B64_ID


def run(coro):
    return asyncio.run(coro)


async def _client(base_url: str, name: str) -> AsyncClient:
    client = AsyncClient(base_url, name)
    resp = await client.register(name, "pw-" + name)
    assert resp.user_id, resp
    return client


def test_capabilities_list_every_version_as_stable(server, unique):
    http = Http(server.base_url, Http(server.base_url).register(unique("caps"))["access_token"])
    status, body = http.request("GET", f"{V3}/capabilities")
    assert status == 200, body
    versions = body["capabilities"]["m.room_versions"]
    assert versions["available"] == {str(n): "stable" for n in range(1, 13)}
    assert versions["default"] == "12"


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_room_of_each_version_works_end_to_end(server, unique, version):
    async def main():
        alice = await _client(server.base_url, unique("alice"))
        bob = await _client(server.base_url, unique("bob"))
        created = await alice.room_create(room_version=version, name=f"v{version}",
                                          invite=[bob.user_id])
        assert isinstance(created, RoomCreateResponse), created
        room_id = created.room_id
        http = Http(server.base_url, alice.access_token)
        q = urllib.parse.quote(room_id, safe="")
        status, create = http.request("GET", f"{V3}/rooms/{q}/state/m.room.create")
        assert status == 200 and create["room_version"] == version
        # Before v11 the create content names the creator; from v11 the sender is.
        assert create.get("creator") == (alice.user_id if int(version) <= 10 else None)

        sent = await alice.room_send(room_id, "m.room.message",
                                     {"msgtype": "m.text", "body": "secret"})
        assert _id_pattern(version).fullmatch(sent.event_id), sent.event_id
        assert (await bob.join(room_id)).room_id == room_id
        reply = await bob.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "hi"})
        assert _id_pattern(version).fullmatch(reply.event_id)
        redaction = await alice.room_redact(room_id, sent.event_id, reason="oops")
        assert _id_pattern(version).fullmatch(redaction.event_id), redaction

        # /messages: the message is served redacted, the redaction names its target
        # both at the top level and in content, whatever the version.
        page = await bob.room_messages(room_id, limit=20)
        assert isinstance(page, RoomMessagesResponse), page
        by_id = {e.event_id: e for e in page.chunk}
        assert isinstance(by_id[sent.event_id], RedactedEvent)
        assert "body" not in by_id[sent.event_id].source["content"]
        assert by_id[reply.event_id].source["content"]["body"] == "hi"
        raw_redaction = by_id[redaction.event_id].source
        assert raw_redaction["redacts"] == sent.event_id
        assert raw_redaction["content"]["redacts"] == sent.event_id

        # /sync for the second user: joined, with the same events and the redaction.
        sync = await bob.sync(timeout=0, full_state=True)
        assert isinstance(sync, SyncResponse), sync
        room = sync.rooms.join[room_id]
        timeline_ids = [e.event_id for e in room.timeline.events]
        assert reply.event_id in timeline_ids and redaction.event_id in timeline_ids
        members = {e.state_key for e in [*room.state, *room.timeline.events]
                   if e.source.get("type") == "m.room.member"}
        assert {alice.user_id, bob.user_id} <= members

        # The event is readable by id, and a kick works (a power event in every version).
        status, ev = http.request("GET", f"{V3}/rooms/{q}/event/"
                                  + urllib.parse.quote(reply.event_id, safe=""))
        assert status == 200 and ev["event_id"] == reply.event_id
        assert (await alice.room_kick(room_id, bob.user_id)).__class__.__name__ == "RoomKickResponse"
        await alice.close()
        await bob.close()
    run(main())


@pytest.mark.parametrize("version,accepted", [("1", True), ("9", True), ("10", False), ("12", False)])
def test_string_power_levels_only_before_v10(server, unique, version, accepted):
    async def main():
        alice = await _client(server.base_url, unique("pl"))
        room_id = (await alice.room_create(room_version=version)).room_id
        current = (await alice.room_get_state_event(room_id, "m.room.power_levels")).content
        resp = await alice.room_put_state(room_id, "m.room.power_levels",
                                          {**current, "events_default": "0", "ban": "+50"})
        if accepted:
            assert isinstance(resp, RoomPutStateResponse), resp
        else:
            assert isinstance(resp, RoomPutStateError) and resp.status_code == "M_FORBIDDEN", resp
        await alice.close()
    run(main())


def test_aliases_event_rule_only_before_v6(server, unique):
    """v1-v5 let a server set m.room.aliases for its own name only; v6+ treat it as any
    state event (power level 50 needed, any state key)."""
    user = Http(server.base_url).register(unique("al"))
    http = Http(server.base_url, user["access_token"])
    for version, own_ok, other_ok in (("5", True, False), ("6", True, True)):
        status, room = http.request("POST", f"{V3}/createRoom", {"room_version": version})
        assert status == 200, room
        q = urllib.parse.quote(room["room_id"], safe="")
        status, _ = http.request("PUT", f"{V3}/rooms/{q}/state/m.room.aliases/test.local",
                                 {"aliases": []})
        assert (status == 200) == own_ok, (version, status)
        status, _ = http.request("PUT", f"{V3}/rooms/{q}/state/m.room.aliases/other.example",
                                 {"aliases": []})
        assert (status == 200) == other_ok, (version, status)


def test_unknown_room_version_is_refused(server, unique):
    http = Http(server.base_url, Http(server.base_url).register(unique("bad"))["access_token"])
    for bad in ("13", "0", "", 12):
        status, body = http.request("POST", f"{V3}/createRoom", {"room_version": bad})
        assert status == 400 and body["errcode"] == "M_UNSUPPORTED_ROOM_VERSION", (bad, body)


def test_v1_room_keeps_working_after_a_restart(own_server, unique):
    """v1/v2 events cite their prev events' reference hashes: after a restart those
    events are no longer in memory and must be loaded before the next event is built."""
    http = Http(own_server.base_url)
    user = http.register(unique("r"))
    http = Http(own_server.base_url, user["access_token"])
    status, room = http.request("POST", f"{V3}/createRoom", {"room_version": "1"})
    assert status == 200, room
    q = urllib.parse.quote(room["room_id"], safe="")
    status, first = http.request("PUT", f"{V3}/rooms/{q}/send/m.room.message/t1",
                                 {"msgtype": "m.text", "body": "before"})
    assert status == 200, first
    own_server.stop()
    own_server.start()
    status, second = http.request("PUT", f"{V3}/rooms/{q}/send/m.room.message/t2",
                                  {"msgtype": "m.text", "body": "after"})
    assert status == 200, second
    status, page = http.request("GET", f"{V3}/rooms/{q}/messages?dir=b&limit=5")
    assert [e["event_id"] for e in page["chunk"][:2]] == [second["event_id"], first["event_id"]]
