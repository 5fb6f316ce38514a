"""Relations, threads and bundled aggregations, end to end with matrix-nio against a real
server: edits, reactions, replies and threads; what a second client sees of them in
/sync, /messages, /context, /event, /relations (paged both ways, recursively) and
/threads; the send-time rules (duplicate reactions, threads off relations); redactions;
threaded read receipts; and the tenant wall on the new endpoints."""
from __future__ import annotations

import asyncio
import subprocess
import sys
from contextlib import asynccontextmanager
from urllib.parse import quote

import pytest
from nio import (
    AsyncClient,
    LoginResponse,
    MessageDirection,
    RoomContextResponse,
    RoomCreateResponse,
    RoomGetEventResponse,
    RoomMessagesResponse,
    RoomRedactResponse,
    RoomSendError,
    RoomSendResponse,
    SyncResponse,
    UpdateReceiptMarkerError,
    UpdateReceiptMarkerResponse,
)
from nio.api import ReceiptType, ThreadInclusion

from tests.server_harness import REPO, Http, ServerProcess

V1, V3 = "/_matrix/client/v1", "/_matrix/client/v3"
PASSWORD = "secret-pw"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A server with an admin, three users of tenant acme and one of tenant globex."""
    srv = ServerProcess(tmp_path_factory.mktemp("relations"))
    srv.write_config()
    subprocess.run([sys.executable, "-m", "homeserver.cli", "register-user", "admin", "--password",
                    "adm-pw", "--admin", "--config", str(srv.config_path)],
                   cwd=REPO, check=True, capture_output=True)
    srv.start()
    http = Http(srv.base_url)
    _, login = http.request("POST", f"{V3}/login", {"type": "m.login.password", "user": "admin",
                                                    "password": "adm-pw"})
    admin = Http(srv.base_url, login["access_token"])
    users = {}
    for name, tenant in (("alice", "acme"), ("bob", "acme"), ("carol", "acme"), ("eve", "globex")):
        reg = http.register(name, PASSWORD)
        status, body = admin.request("PUT", f"/_homeserver/admin/v1/users/{reg['user_id']}/tenant",
                                     {"tenant_id": tenant})
        assert status == 200, body
        users[name] = Http(srv.base_url, reg["access_token"])
        users[name].user_id = reg["user_id"]
    yield srv, users
    srv.stop()
    srv.stop_postgres()


def run(coro):
    return asyncio.run(coro)


@asynccontextmanager
async def nio_users(world, *names: str):
    srv, _ = world
    clients = []
    try:
        for name in names:
            client = AsyncClient(srv.base_url, name)
            r = await client.login(PASSWORD, device_name=f"{name} nio")
            assert isinstance(r, LoginResponse), r
            clients.append(client)
        yield clients
    finally:
        for c in clients:
            await c.close()


async def shared_room(owner: AsyncClient, *members: AsyncClient) -> str:
    r = await owner.room_create(invite=[m.user_id for m in members])
    assert isinstance(r, RoomCreateResponse), r
    for m in members:
        assert (await m.join(r.room_id)).room_id == r.room_id
    return r.room_id


async def send(client: AsyncClient, room_id: str, content: dict, event_type: str = "m.room.message") -> str:
    r = await client.room_send(room_id, event_type, content)
    assert isinstance(r, RoomSendResponse), r
    return r.event_id


async def send_error(client: AsyncClient, room_id: str, content: dict,
                     event_type: str = "m.room.message") -> tuple[int, str]:
    r = await client.room_send(room_id, event_type, content)
    assert isinstance(r, RoomSendError), r
    return r.transport_response.status, r.status_code


def text(body: str, **relates_to) -> dict:
    content: dict = {"msgtype": "m.text", "body": body}
    if relates_to:
        content["m.relates_to"] = relates_to
    return content


def edit(target: str, body: str) -> dict:
    return {"msgtype": "m.text", "body": f"* {body}", "m.new_content": {"msgtype": "m.text", "body": body},
            "m.relates_to": {"rel_type": "m.replace", "event_id": target}}


def reaction(target: str, key: str) -> dict:
    return {"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}}


def relations_of(event_source: dict) -> dict:
    return event_source.get("unsigned", {}).get("m.relations", {})


def get(user: Http, path: str) -> tuple[int, dict]:
    return user.request("GET", path)


def page_all(user: Http, path: str, params: str) -> tuple[list[str], list[dict]]:
    """Follow next_batch to the end: (event ids in order served, every page's body)."""
    ids, pages, token = [], [], None
    for _ in range(100):
        q = params + (f"&from={quote(token)}" if token else "")
        status, body = get(user, f"{path}?{q}")
        assert status == 200, body
        pages.append(body)
        ids += [e["event_id"] for e in body["chunk"]]
        token = body.get("next_batch")
        if token is None:
            return ids, pages
    raise AssertionError("pagination never ended")


# ---- aggregations seen by a second client everywhere events are served ---------------

def test_edit_react_reply_thread_seen_by_another_client_everywhere(world):
    async def flow():
        async with nio_users(world, "alice", "bob", "carol") as (alice, bob, carol):
            room = await shared_room(alice, bob, carol)
            root = await send(alice, room, text("original"))
            first_edit = await send(alice, room, edit(root, "first edit"))
            latest_edit = await send(alice, room, edit(root, "latest edit"))
            # Invalid edits, accepted but never bundled: another sender's, and an edit of an edit.
            await send(bob, room, edit(root, "bob rewrites alice"))
            await send(alice, room, edit(first_edit, "edit of an edit"))
            await send(bob, room, reaction(root, "👍"), "m.reaction")
            reply = await send(bob, room, text("a plain reply", **{"m.in_reply_to": {"event_id": root}}))
            in_thread_1 = await send(bob, room, text("thread 1", rel_type="m.thread", event_id=root))
            in_thread_2 = await send(alice, room, text("thread 2", rel_type="m.thread", event_id=root))
            thread_edit = await send(alice, room, edit(in_thread_2, "thread 2 edited"))
            await send(alice, room, text("after"))

            def check(source: dict, viewer: str) -> None:
                rel = relations_of(source)
                assert set(rel) == {"m.replace", "m.thread"}, rel  # annotations are not bundled
                assert rel["m.replace"]["event_id"] == latest_edit
                assert rel["m.replace"]["content"]["m.new_content"]["body"] == "latest edit"
                assert rel["m.replace"]["sender"] == alice.user_id
                assert source["content"]["body"] == "original"  # content is never replaced
                thread = rel["m.thread"]
                assert thread["count"] == 2
                assert thread["latest_event"]["event_id"] == in_thread_2
                latest_rel = thread["latest_event"]["unsigned"]["m.relations"]
                assert latest_rel["m.replace"]["event_id"] == thread_edit
                assert thread["current_user_participated"] is (viewer != carol.user_id)

            for viewer in (bob, carol):
                # /sync (initial): the root is in the timeline with its bundle.
                r = await viewer.sync(timeout=0, sync_filter={"room": {"timeline": {"limit": 50}}})
                assert isinstance(r, SyncResponse), r
                timeline = {e.event_id: e.source for e in r.rooms.join[room].timeline.events}
                check(timeline[root], viewer.user_id)
                assert not relations_of(timeline[first_edit])  # an edit of an edit is not bundled
                assert "m.relations" not in timeline[reply].get("unsigned", {})
                # /messages
                r = await viewer.room_messages(room, limit=50, direction=MessageDirection.back)
                assert isinstance(r, RoomMessagesResponse), r
                check(next(e.source for e in r.chunk if e.event_id == root), viewer.user_id)
                # /context
                r = await viewer.room_context(room, root, limit=4)
                assert isinstance(r, RoomContextResponse), r
                check(r.event.source, viewer.user_id)
                # /event
                r = await viewer.room_get_event(room, root)
                assert isinstance(r, RoomGetEventResponse), r
                check(r.event.source, viewer.user_id)

            # A reply is not a relation: /relations of the root does not list it, and
            # asking for the reply's own relations works.
            _, users = world
            status, body = get(users["carol"], f"{V1}/rooms/{room}/relations/{root}?limit=50")
            assert status == 200, body
            ids = [e["event_id"] for e in body["chunk"]]
            assert reply not in ids and in_thread_1 in ids and latest_edit in ids
            status, body = get(users["carol"], f"{V1}/rooms/{room}/relations/{reply}")
            assert (status, body["chunk"]) == (200, [])

    run(flow())


def test_new_edit_replaces_the_bundle_and_redactions_drop_out(world):
    async def flow():
        async with nio_users(world, "alice", "bob") as (alice, bob):
            room = await shared_room(alice, bob)
            root = await send(alice, room, text("v0"))

            async def bundle_seen_by_bob() -> dict:
                r = await bob.room_get_event(room, root)
                assert isinstance(r, RoomGetEventResponse), r
                return relations_of(r.event.source)

            assert await bundle_seen_by_bob() == {}
            e1 = await send(alice, room, edit(root, "v1"))
            assert (await bundle_seen_by_bob())["m.replace"]["event_id"] == e1
            e2 = await send(alice, room, edit(root, "v2"))
            assert (await bundle_seen_by_bob())["m.replace"]["event_id"] == e2
            t1 = await send(bob, room, text("t1", rel_type="m.thread", event_id=root))
            t2 = await send(bob, room, text("t2", rel_type="m.thread", event_id=root))
            ref = await send(bob, room, text("see above", rel_type="m.reference", event_id=root))
            bundle = await bundle_seen_by_bob()
            assert (bundle["m.thread"]["count"], bundle["m.thread"]["latest_event"]["event_id"]) == (2, t2)
            assert bundle["m.reference"] == {"chunk": [{"event_id": ref}]}

            # Redacting the latest edit reverts to the one before; the latest thread
            # event's redaction moves `latest_event` back.
            assert isinstance(await alice.room_redact(room, e2), RoomRedactResponse)
            assert isinstance(await bob.room_redact(room, t2), RoomRedactResponse)
            bundle = await bundle_seen_by_bob()
            assert bundle["m.replace"]["event_id"] == e1
            assert (bundle["m.thread"]["count"], bundle["m.thread"]["latest_event"]["event_id"]) == (1, t1)
            _, users = world
            status, body = get(users["bob"], f"{V1}/rooms/{room}/relations/{root}")
            assert {e["event_id"] for e in body["chunk"]} == {e1, t1, ref}
            # A redacted original keeps its thread and references, but no edit is bundled.
            assert isinstance(await alice.room_redact(room, root), RoomRedactResponse)
            bundle = await bundle_seen_by_bob()
            assert "m.replace" not in bundle and bundle["m.thread"]["count"] == 1
            assert bundle["m.reference"]["chunk"] == [{"event_id": ref}]

    run(flow())


# ---- /relations paging ----------------------------------------------------------------

def test_relations_pages_both_ways_with_and_without_recursion(world):
    async def flow():
        async with nio_users(world, "alice", "bob") as (alice, bob):
            room = await shared_room(alice, bob)
            root = await send(alice, room, text("root"))
            direct, indirect = [], []
            for i in range(4):
                t = await send(bob if i % 2 else alice, room, text(f"t{i}", rel_type="m.thread", event_id=root))
                direct.append(t)
                r = await send(alice, room, reaction(t, "👀"), "m.reaction")  # 2nd level
                indirect.append(r)
                indirect.append(await send(bob, room, text(f"ref {i}", rel_type="m.reference", event_id=r)))
            # nio's own iterator follows next_batch backwards through the direct children.
            seen = [e.event_id async for e in bob.room_get_event_relations(room, root, limit=3)]
            assert seen == direct[::-1]
            return room, root, direct, indirect

    room, root, direct, indirect = run(flow())
    _, users = world
    bob = users["bob"]
    path = f"{V1}/rooms/{room}/relations/{root}"
    ordered = [eid for eid in _sent_order(bob, room) if eid in set(direct + indirect)]

    backwards, pages = page_all(bob, path, "limit=3&recurse=true")
    assert backwards == ordered[::-1]
    assert all(p["recursion_depth"] == 3 for p in pages)
    assert all(len(p["chunk"]) <= 3 for p in pages) and len(pages) == 4
    assert "prev_batch" not in pages[0] and pages[1]["prev_batch"]
    forwards, _ = page_all(bob, path, "limit=5&recurse=true&dir=f")
    assert forwards == ordered
    # Not recursing (the default): only direct children, and no recursion_depth.
    only_direct, pages = page_all(bob, path, "limit=2")
    assert only_direct == direct[::-1] and all("recursion_depth" not in p for p in pages)
    _, pages = page_all(bob, path, "limit=2&recurse=false")
    assert all(p["recursion_depth"] == 1 for p in pages)
    # Filters apply at every level: annotations under the thread events are not reached
    # through m.thread, and m.annotation alone is not a child of the root.
    threads_only, _ = page_all(bob, path + "/m.thread", "recurse=true")
    assert threads_only == direct[::-1]
    assert page_all(bob, path + "/m.annotation/m.reaction", "recurse=true")[0] == []
    assert page_all(bob, f"{path}/m.thread/m.room.message", "limit=10")[0] == direct[::-1]
    # /messages and /sync tokens work as `from`/`to`: the same position in the room.
    status, sync = get(bob, f"{V3}/sync?timeout=0")
    assert status == 200
    status, page = get(bob, f"{path}?from={sync['next_batch']}&limit=2&recurse=true")
    assert [e["event_id"] for e in page["chunk"]] == ordered[::-1][:2]
    status, msgs = get(bob, f"{V3}/rooms/{room}/messages?dir=b&limit=3")
    status, page = get(bob, f"{path}?from={msgs['end']}&recurse=true&limit=50")
    older = [e["event_id"] for e in msgs["chunk"]]
    assert [e["event_id"] for e in page["chunk"]] == [e for e in ordered[::-1] if e not in older]
    # `to` bounds a range from an earlier page's `from` (the spec's example).
    _, first = get(bob, f"{path}?limit=3&recurse=true")
    _, second = get(bob, f"{path}?limit=3&recurse=true&from={first['next_batch']}")
    status, ranged = get(bob, f"{path}?recurse=true&limit=50&to={second['next_batch']}")
    assert [e["event_id"] for e in ranged["chunk"]] == ordered[::-1][:6]
    # Bad parameters are the spec's 400s.
    for query in ("dir=x", "limit=0", "limit=abc", "recurse=yes", "from=garbage"):
        status, body = get(bob, f"{path}?{query}")
        assert (status, body["errcode"]) == (400, "M_INVALID_PARAM"), (query, body)


def _sent_order(user: Http, room: str) -> list[str]:
    status, body = get(user, f"{V3}/rooms/{room}/messages?dir=f&limit=1000")
    assert status == 200, body
    return [e["event_id"] for e in body["chunk"]]


# ---- /threads -------------------------------------------------------------------------

def test_threads_list_by_latest_activity_and_participation(world):
    async def flow():
        async with nio_users(world, "alice", "bob", "carol") as (alice, bob, carol):
            room = await shared_room(alice, bob, carol)
            roots = [await send(alice, room, text(f"topic {i}")) for i in range(4)]
            await send(bob, room, text("not a thread"))
            for i, root in enumerate(roots):
                await send(bob, room, text(f"reply {i}", rel_type="m.thread", event_id=root))
            await send(carol, room, text("carol joins in", rel_type="m.thread", event_id=roots[1]))
            carol_root = await send(carol, room, text("carol's own topic"))
            await send(bob, room, text("answer", rel_type="m.thread", event_id=carol_root))
            # Activity moves topic 0 to the front.
            await send(bob, room, text("bump", rel_type="m.thread", event_id=roots[0]))
            everyone = [e.event_id async for e in carol.room_get_threads(room, limit=2)]
            mine = [e.event_id async for e in carol.room_get_threads(
                room, include=ThreadInclusion.participated, limit=1)]
            return room, roots, carol_root, everyone, mine

    room, roots, carol_root, everyone, mine = run(flow())
    assert everyone == [roots[0], carol_root, roots[1], roots[3], roots[2]]
    assert mine == [carol_root, roots[1]]
    _, users = world
    status, body = get(users["carol"], f"{V1}/rooms/{room}/threads?limit=1")
    root_event = body["chunk"][0]
    assert root_event["event_id"] == roots[0]
    assert root_event["unsigned"]["m.relations"]["m.thread"]["count"] == 2
    assert root_event["unsigned"]["m.relations"]["m.thread"]["current_user_participated"] is False
    for query in ("include=mine", "limit=0", "from=s12", "from=nonsense"):
        status, body = get(users["carol"], f"{V1}/rooms/{room}/threads?{query}")
        assert (status, body["errcode"]) == (400, "M_INVALID_PARAM"), (query, body)


# ---- the send-time rules --------------------------------------------------------------

def test_duplicate_reaction_is_refused_until_the_first_is_redacted(world):
    async def flow():
        async with nio_users(world, "alice", "bob") as (alice, bob):
            room = await shared_room(alice, bob)
            target = await send(alice, room, text("react to me"))
            first = await send(bob, room, reaction(target, "👍"), "m.reaction")
            assert await send_error(bob, room, reaction(target, "👍"), "m.reaction") == (
                400, "M_DUPLICATE_ANNOTATION")
            # Another key, or another sender, is a different annotation.
            await send(bob, room, reaction(target, "🎉"), "m.reaction")
            await send(alice, room, reaction(target, "👍"), "m.reaction")
            # Sent twice at once, exactly one lands.
            results = await asyncio.gather(*(bob.room_send(room, "m.reaction", reaction(target, "🚀"))
                                             for _ in range(2)))
            assert sorted(type(r).__name__ for r in results) == ["RoomSendError", "RoomSendResponse"]
            assert next(r for r in results if isinstance(r, RoomSendError)).status_code == "M_DUPLICATE_ANNOTATION"
            # Redacted, it drops out of /relations and may be sent again.
            assert isinstance(await bob.room_redact(room, first), RoomRedactResponse)
            listed = [e.event_id async for e in alice.room_get_event_relations(room, target)]
            assert first not in listed and len(listed) == 3
            again = await send(bob, room, reaction(target, "👍"), "m.reaction")
            listed = [e.event_id async for e in alice.room_get_event_relations(room, target)]
            assert again in listed and len(listed) == 4

    run(flow())


def test_relation_rules_refuse_bad_parents(world):
    async def flow():
        async with nio_users(world, "alice", "bob") as (alice, bob):
            room = await shared_room(alice, bob)
            other_room = await shared_room(alice)
            root = await send(alice, room, text("root"))
            in_thread = await send(bob, room, text("in thread", rel_type="m.thread", event_id=root))
            an_edit = await send(alice, room, edit(root, "edited"))
            elsewhere = await send(alice, other_room, text("elsewhere"))
            # A thread cannot start from an event in a thread, nor from any other relation.
            for parent in (in_thread, an_edit):
                assert await send_error(bob, room, text("nested", rel_type="m.thread", event_id=parent)) == (
                    400, "M_UNKNOWN")
            # Relations to another room's event and to no event at all answer alike.
            assert await send_error(bob, room, reaction(elsewhere, "x"), "m.reaction") == (400, "M_UNKNOWN")
            assert await send_error(bob, room, reaction("$nope", "x"), "m.reaction") == (400, "M_UNKNOWN")
            # An annotation needs a key.
            bad = {"m.relates_to": {"rel_type": "m.annotation", "event_id": root}}
            assert await send_error(bob, room, bad, "m.reaction") == (400, "M_BAD_JSON")
            # A reply to a thread event is fine (it is not a rel_type).
            await send(bob, room, text("reply", **{"m.in_reply_to": {"event_id": in_thread}}))

    run(flow())


# ---- threaded read receipts -----------------------------------------------------------

def test_threaded_receipts_are_stored_and_synced_per_thread(world):
    async def flow():
        async with nio_users(world, "alice", "bob") as (alice, bob):
            room = await shared_room(alice, bob)
            root = await send(alice, room, text("root"))
            in_thread = await send(alice, room, text("in thread", rel_type="m.thread", event_id=root))
            reacted = await send(alice, room, reaction(in_thread, "👍"), "m.reaction")
            main = await send(alice, room, text("main timeline"))

            async def receipt(event_id: str, thread_id: str | None):
                return await bob.update_receipt_marker(room, event_id, ReceiptType.read, thread_id)

            # A reaction in a thread is in the thread; the root is in the main timeline.
            for event_id, thread_id in ((in_thread, root), (reacted, root), (root, "main"), (main, None)):
                assert isinstance(await receipt(event_id, thread_id), UpdateReceiptMarkerResponse)
            # Each (user, type, thread) keeps its own receipt: the unthreaded one on `main`
            # did not replace the threaded ones, and each is served with its thread.
            r = await alice.sync(timeout=0)
            assert isinstance(r, SyncResponse), r
            seen = {(rc.event_id, rc.thread_id) for ev in r.rooms.join[room].ephemeral
                    for rc in getattr(ev, "receipts", []) if rc.user_id == bob.user_id}
            assert seen == {(reacted, root), (root, "main"), (main, None)}
            # The root may also carry its own thread's receipt (the thread starts with it).
            assert isinstance(await receipt(root, root), UpdateReceiptMarkerResponse)
            raw = next(e for e in _raw_ephemeral(world, room) if e["type"] == "m.receipt")["content"]
            assert raw[root]["m.read"][bob.user_id]["thread_id"] in ("main", root)
            assert "thread_id" not in raw[main]["m.read"][bob.user_id]
            assert reacted not in raw  # replaced by the receipt on the root for thread `root`
            # The thread must be the event's: the spec's 400s.
            for event_id, thread_id in ((in_thread, "main"), (main, root), (in_thread, main)):
                r = await receipt(event_id, thread_id)
                assert isinstance(r, UpdateReceiptMarkerError) and r.status_code == "M_INVALID_PARAM", r
            _, users = world
            for body in ({"thread_id": ""}, {"thread_id": 5}):
                status, resp = users["bob"].request("POST", f"{V3}/rooms/{room}/receipt/m.read/{main}", body)
                assert (status, resp["errcode"]) == (400, "M_INVALID_PARAM")
            status, resp = users["bob"].request("POST", f"{V3}/rooms/{room}/receipt/m.fully_read/{main}",
                                                {"thread_id": "main"})
            assert (status, resp["errcode"]) == (400, "M_INVALID_PARAM")

    run(flow())


def _raw_ephemeral(world, room: str) -> list[dict]:
    _, users = world
    status, body = get(users["alice"], f"{V3}/sync?timeout=0")
    assert status == 200, body
    return body["rooms"]["join"][room]["ephemeral"]["events"]


# ---- tenancy ----------------------------------------------------------------------------

def test_another_tenant_gets_the_answers_of_a_missing_room_and_event(world):
    _, users = world
    alice, eve = users["alice"], users["eve"]
    status, body = alice.request("POST", f"{V3}/createRoom", {"preset": "public_chat"})
    room = body["room_id"]
    status, body = alice.request("PUT", f"{V3}/rooms/{room}/send/m.room.message/t1", text("secret"))
    root = body["event_id"]
    alice.request("PUT", f"{V3}/rooms/{room}/send/m.room.message/t2",
                  text("thread", rel_type="m.thread", event_id=root))
    missing_room = "!doesnotexist:test.local"
    for suffix in ("", "/m.thread", "/m.thread/m.room.message"):
        theirs = get(eve, f"{V1}/rooms/{room}/relations/{root}{suffix}")
        absent_room = get(eve, f"{V1}/rooms/{missing_room}/relations/{root}{suffix}")
        absent_event = get(alice, f"{V1}/rooms/{room}/relations/$doesnotexist{suffix}")
        assert theirs == absent_room == absent_event
        assert theirs[0] == 404 and theirs[1]["errcode"] == "M_NOT_FOUND"
    theirs = get(eve, f"{V1}/rooms/{room}/threads")
    absent = get(eve, f"{V1}/rooms/{missing_room}/threads")
    assert theirs == absent and theirs[0] == 403 and theirs[1]["errcode"] == "M_FORBIDDEN"
    # Sending a relation into their room tells them nothing either: as into a missing room.
    status, body = eve.request("PUT", f"{V3}/rooms/{room}/send/m.reaction/t3", reaction(root, "👀"))
    status2, body2 = eve.request("PUT", f"{V3}/rooms/{room}/send/m.reaction/t4", reaction("$nope", "👀"))
    status3, body3 = eve.request("PUT", f"{V3}/rooms/{missing_room}/send/m.reaction/t5", reaction(root, "👀"))
    assert (status, body["errcode"]) == (status2, body2["errcode"]) == (status3, body3["errcode"]) \
        == (404, "M_NOT_FOUND")
    # The room's own members see it all.
    status, body = get(alice, f"{V1}/rooms/{room}/threads")
    assert status == 200 and [e["event_id"] for e in body["chunk"]] == [root]


# ---- after a restart: everything is read back from Postgres ----------------------------

def test_aggregations_threads_and_relations_survive_a_restart(world):
    srv, users = world
    alice, bob = users["alice"], users["bob"]
    status, body = alice.request("POST", f"{V3}/createRoom", {"invite": [bob.user_id]})
    room = body["room_id"]
    assert bob.request("POST", f"{V3}/rooms/{room}/join", {})[0] == 200
    sent = iter(range(1000))

    def put(user: Http, content: dict, event_type: str = "m.room.message") -> str:
        status, body = user.request("PUT", f"{V3}/rooms/{room}/send/{event_type}/r{next(sent)}", content)
        assert status == 200, body
        return body["event_id"]

    root = put(alice, text("root"))
    latest_edit = [put(alice, edit(root, f"v{i}")) for i in range(2)][-1]
    put(bob, reaction(root, "👍"), "m.reaction")
    replies = [put(bob, text(f"r{i}", rel_type="m.thread", event_id=root)) for i in range(3)]
    put(bob, edit(replies[-1], "r2 edited"))
    before = get(bob, f"{V3}/rooms/{room}/event/{root}")[1]["unsigned"]["m.relations"]
    srv.stop()
    srv.start()
    after = get(bob, f"{V3}/rooms/{room}/event/{root}")[1]["unsigned"]["m.relations"]
    assert after == before
    assert after["m.replace"]["event_id"] == latest_edit
    assert (after["m.thread"]["count"], after["m.thread"]["latest_event"]["event_id"]) == (3, replies[-1])
    status, body = get(bob, f"{V1}/rooms/{room}/threads")
    assert [e["event_id"] for e in body["chunk"]] == [root]
    assert body["chunk"][0]["unsigned"]["m.relations"] == after
    status, sync = get(bob, f"{V3}/sync?timeout=0&filter=" + quote('{"room":{"timeline":{"limit":50}}}'))
    synced = {e["event_id"]: e for e in sync["rooms"]["join"][room]["timeline"]["events"]}
    assert synced[root]["unsigned"]["m.relations"] == after
    # Duplicate reactions are still refused, from the stored relations alone.
    status, body = bob.request("PUT", f"{V3}/rooms/{room}/send/m.reaction/again", reaction(root, "👍"))
    assert (status, body["errcode"]) == (400, "M_DUPLICATE_ANNOTATION")


def test_bundles_leave_out_what_came_after_the_asker_left(world):
    """History visibility holds inside bundles: a past member reading an old message does
    not see the edit or the thread reply sent after they left."""
    _, users = world
    alice, bob = users["alice"], users["bob"]
    status, body = alice.request("POST", f"{V3}/createRoom", {"invite": [bob.user_id]})
    room = body["room_id"]
    assert bob.request("POST", f"{V3}/rooms/{room}/join", {})[0] == 200
    _, body = alice.request("PUT", f"{V3}/rooms/{room}/send/m.room.message/a1", text("root"))
    root = body["event_id"]
    _, body = bob.request("PUT", f"{V3}/rooms/{room}/send/m.room.message/b1",
                          text("bob was here", rel_type="m.thread", event_id=root))
    bobs_reply = body["event_id"]
    assert bob.request("POST", f"{V3}/rooms/{room}/leave", {})[0] == 200
    _, body = alice.request("PUT", f"{V3}/rooms/{room}/send/m.room.message/a2", edit(root, "secret edit"))
    secret_edit = body["event_id"]
    _, body = alice.request("PUT", f"{V3}/rooms/{room}/send/m.room.message/a3",
                            text("secret reply", rel_type="m.thread", event_id=root))
    secret_reply = body["event_id"]

    status, seen_by_alice = get(alice, f"{V3}/rooms/{room}/event/{root}")
    rel = seen_by_alice["unsigned"]["m.relations"]
    assert rel["m.replace"]["event_id"] == secret_edit
    assert rel["m.thread"]["latest_event"]["event_id"] == secret_reply
    status, seen_by_bob = get(bob, f"{V3}/rooms/{room}/event/{root}")
    assert status == 200
    assert "secret" not in str(seen_by_bob)
    status, page = get(bob, f"{V3}/rooms/{room}/messages?dir=b&limit=50")
    assert status == 200 and root in [e["event_id"] for e in page["chunk"]]
    assert "secret" not in str(page)
    status, rels = get(bob, f"{V1}/rooms/{room}/relations/{root}")
    assert [e["event_id"] for e in rels["chunk"]] == [bobs_reply]
