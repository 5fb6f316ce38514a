"""Server-side search (POST /search, room_events) against a real server, driven by
matrix-nio clients: finding words among thousands of messages, rank and recent order,
pagination, filters, groups, highlights, context, state, and above all that nobody finds
what they may not read (left rooms, `joined` history, other tenants, rooms never joined),
that edits are found by their latest text and redacted events not at all. nio has no
search call, so requests go through its `send` with nio's own session.

Every test uses words of its own (`word()`), so tests sharing the server never see each
other's messages."""
from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nio import AsyncClient, Api, RoomCreateResponse, RoomSendResponse

from tests.server_harness import Http, ServerProcess
from tests.tenant_world import running_world

V3 = "/_matrix/client/v3"


def word() -> str:
    """A word no other message contains (nor starts with: words also match as prefixes)."""
    return "w" + uuid.uuid4().hex[:12]


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with running_world(tmp_path_factory.mktemp("search")) as w:
        yield w.srv, w.admin, {name: w.user(name, tenant) for name, tenant in (
            ("alice", "acme"), ("bob", "acme"), ("carol", "acme"), ("dave", "acme"), ("trent", "acme"),
            ("mallory", "globex"))}


class Users:
    """nio clients of the world's accounts, for one test's event loop."""

    def __init__(self, world) -> None:
        self.srv, self.admin, self.accounts = world
        self.clients: list[AsyncClient] = []

    async def __aenter__(self) -> "Users":
        return self

    async def __aexit__(self, *exc) -> None:
        for c in self.clients:
            await c.close()

    def __getitem__(self, name: str) -> AsyncClient:
        acc = self.accounts[name]
        for c in self.clients:
            if c.user_id == acc.user_id:
                return c
        c = AsyncClient(self.srv.base_url, acc.user_id)
        c.restore_login(acc.user_id, acc.device_id, acc.token)
        self.clients.append(c)
        return c


async def raw_search(client: AsyncClient, body, next_batch: str | None = None, raw: bytes | None = None,
                     token: str | None = "client") -> tuple[int, dict]:
    path = Api._build_path(["search"], {"next_batch": next_batch} if next_batch else None)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {client.access_token if token == 'client' else token}"
    resp = await client.send("POST", path, raw if raw is not None else json.dumps(body), headers=headers)
    return resp.status, await resp.json(content_type=None)


async def search(client: AsyncClient, term: str, next_batch: str | None = None, **criteria) -> dict:
    status, body = await raw_search(
        client, {"search_categories": {"room_events": {"search_term": term, **criteria}}}, next_batch)
    assert status == 200, body
    return body["search_categories"]["room_events"]


def ids(result: dict) -> list[str]:
    return [r["result"]["event_id"] for r in result["results"]]


async def all_pages(client: AsyncClient, term: str, **criteria) -> list[dict]:
    """Every page of a search, following next_batch."""
    pages, token = [], None
    for _ in range(1000):
        page = await search(client, term, token, **criteria)
        pages.append(page)
        token = page.get("next_batch")
        if not token:
            return pages
    raise AssertionError("pagination never ended")


async def create_room(client: AsyncClient, **kwargs) -> str:
    r = await client.room_create(**kwargs)
    assert isinstance(r, RoomCreateResponse), r
    return r.room_id


async def send(client: AsyncClient, room_id: str, body: str, **content) -> str:
    r = await client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": body, **content})
    assert isinstance(r, RoomSendResponse), r
    return r.event_id


async def put_state(client: AsyncClient, room_id: str, event_type: str, content: dict) -> str:
    r = await client.room_put_state(room_id, event_type, content)
    assert hasattr(r, "event_id"), r
    return r.event_id


async def join(inviter: AsyncClient, client: AsyncClient, room_id: str) -> None:
    await inviter.room_invite(room_id, client.user_id)
    r = await client.join(room_id)
    assert getattr(r, "room_id", None) == room_id, r


async def send_many(client: AsyncClient, room_id: str, bodies: list[str], concurrency: int = 64) -> list[str]:
    gate = asyncio.Semaphore(concurrency)

    async def one(body: str) -> str:
        async with gate:
            return await send(client, room_id, body)

    return list(await asyncio.gather(*(one(b) for b in bodies)))


# ---- finding ---------------------------------------------------------------------------

def test_finds_a_word_among_thousands_of_messages(world):
    needle, hay = word(), word()

    async def flow():
        async with Users(world) as u:
            room = await create_room(u["alice"], name="bulk")
            bodies = [f"{hay} filler message {i} about nothing in particular" for i in range(3000)]
            for i in (17, 1500, 2950):
                bodies[i] = f"the {needle} is here, message {i}"
            t0 = time.monotonic()
            sent = await send_many(u["alice"], room, bodies)
            fill_s = time.monotonic() - t0
            wanted = {sent[i] for i in (17, 1500, 2950)}

            t0 = time.monotonic()
            found = await search(u["alice"], needle)
            search_s = time.monotonic() - t0
            assert set(ids(found)) == wanted and found["count"] == 3
            assert "next_batch" not in found
            # A word in all of them: the count covers every match, a page only `limit`.
            common = await search(u["alice"], hay, filter={"limit": 7})
            assert common["count"] == 2997 and len(common["results"]) == 7 and common["next_batch"]
            return fill_s, search_s

    fill_s, search_s = run(flow())
    assert fill_s < 45, f"filling took {fill_s:.1f}s"
    assert search_s < 2, f"a search took {search_s:.2f}s"


def test_rank_and_recent_order(world):
    w = word()

    async def flow():
        async with Users(world) as u:
            room = await create_room(u["alice"])
            long = await send(u["alice"], room, f"{w} " + " ".join(f"padding{i}" for i in range(60)))
            short = await send(u["alice"], room, f"{w} {w}")
            middle = await send(u["alice"], room, f"about {w} and five other words")
            by_rank = await search(u["alice"], w)
            recent = await search(u["alice"], w, order_by="recent")
            default = await search(u["alice"], w, order_by="rank")
            return long, short, middle, by_rank, recent, default

    long, short, middle, by_rank, recent, default = run(flow())
    assert ids(recent) == [middle, short, long]
    assert ids(by_rank) == [short, middle, long] == ids(default)
    ranks = [r["rank"] for r in by_rank["results"]]
    assert ranks == sorted(ranks, reverse=True) and ranks[0] > ranks[-1] > 0


@pytest.mark.parametrize("order_by", ["rank", "recent"])
def test_pagination_returns_every_result_exactly_once(world, order_by):
    w = word()

    async def flow():
        async with Users(world) as u:
            room = await create_room(u["alice"])
            # Equal texts tie on rank: the stream order must break ties across pages.
            bodies = [f"{w} same text" if i % 3 else f"{w} {'more ' * (i % 7)}text {i}" for i in range(57)]
            sent = await send_many(u["alice"], room, bodies, concurrency=1)  # in order
            await send(u["alice"], room, "not matching at all")
            pages = await all_pages(u["alice"], w, order_by=order_by, filter={"limit": 10})
            return sent, pages

    sent, pages = run(flow())
    got = [eid for p in pages for eid in ids(p)]
    assert len(pages) == 6 and [len(p["results"]) for p in pages] == [10] * 5 + [7]
    assert len(got) == len(set(got)) == 57 and set(got) == set(sent)
    assert all(p["count"] == 57 for p in pages)
    if order_by == "recent":
        assert got == sent[::-1]
    else:
        ranks = [r["rank"] for p in pages for r in p["results"]]
        assert ranks == sorted(ranks, reverse=True)


def test_filters(world):
    w = word()

    async def flow():
        async with Users(world) as u:
            alice, bob = u["alice"], u["bob"]
            r1 = await create_room(alice, name=f"{w} room name", topic=f"the {w} topic")
            r2 = await create_room(alice)
            await join(alice, bob, r1)
            await join(alice, bob, r2)
            a1 = await send(alice, r1, f"{w} from alice in one")
            b1 = await send(bob, r1, f"{w} from bob in one")
            a2 = await send(alice, r2, f"{w} from alice in two", url="mxc://test.local/file")
            b2 = await send(bob, r2, f"{w} from bob in two")
            s = lambda **crit: search(alice, w, **crit)  # noqa: E731
            res = {
                "all": await s(),
                "rooms": await s(filter={"rooms": [r2]}),
                "not_rooms": await s(filter={"not_rooms": [r2]}),
                "both": await s(filter={"rooms": [r1, r2], "not_rooms": [r1]}),
                "senders": await s(filter={"senders": [bob.user_id]}),
                "not_senders": await s(filter={"not_senders": [bob.user_id]}),
                "types": await s(filter={"types": ["m.room.name", "m.room.topic"]}),
                "wild": await s(filter={"types": ["m.room.*"], "not_types": ["m.room.message"]}),
                "not_types": await s(filter={"not_types": ["m.room.message"]}),
                "keys_name": await s(keys=["content.name"]),
                "keys_topic": await s(keys=["content.topic"]),
                "keys_body": await s(keys=["content.body"]),
                "url": await s(filter={"contains_url": True}),
                "no_url": await s(filter={"contains_url": False, "types": ["m.room.message"]}),
                "no_keys": await s(keys=[]),
            }
            return (a1, b1, a2, b2), res

    (a1, b1, a2, b2), res = run(flow())
    types = lambda key: sorted(r["result"]["type"] for r in res[key]["results"])  # noqa: E731
    assert res["all"]["count"] == 6
    assert set(ids(res["rooms"])) == {a2, b2}
    assert set(ids(res["both"])) == {a2, b2}
    assert types("not_rooms") == ["m.room.message", "m.room.message", "m.room.name", "m.room.topic"]
    assert set(ids(res["senders"])) == {b1, b2}
    assert types("not_senders") == ["m.room.message", "m.room.message", "m.room.name", "m.room.topic"]
    assert types("types") == types("wild") == types("not_types") == ["m.room.name", "m.room.topic"]
    assert types("keys_name") == ["m.room.name"] and types("keys_topic") == ["m.room.topic"]
    assert set(ids(res["keys_body"])) == {a1, b1, a2, b2}
    assert ids(res["url"]) == [a2]
    assert set(ids(res["no_url"])) == {a1, b1, b2}
    assert res["no_keys"]["results"] == [] and res["no_keys"]["count"] == 0


def test_groups_by_room_and_sender_and_their_next_batch(world):
    w = word()
    groupings = {"group_by": [{"key": "room_id"}, {"key": "sender"}]}

    async def flow():
        async with Users(world) as u:
            alice, bob = u["alice"], u["bob"]
            r1, r2 = await create_room(alice), await create_room(alice)
            await join(alice, bob, r1)
            in_r1 = [await send(alice if i % 2 else bob, r1, f"{w} one {i}") for i in range(5)]
            in_r2 = [await send(alice, r2, f"{w} two {i}") for i in range(3)]
            first = await search(alice, w, order_by="recent", groupings=groupings, filter={"limit": 4})
            # A group's token continues within that group only.
            pages, token = [], first["groups"]["room_id"][r1]["next_batch"]
            while token:
                page = await search(alice, w, token, order_by="recent", groupings=groupings, filter={"limit": 2})
                pages.append(page)
                token = page.get("next_batch")
            bob_rest = await search(alice, w, first["groups"]["sender"][bob.user_id]["next_batch"],
                                    order_by="recent", groupings=groupings)
            return alice.user_id, bob.user_id, r1, r2, in_r1, in_r2, first, pages, bob_rest

    alice, bob, r1, r2, in_r1, in_r2, first, pages, bob_rest = run(flow())
    # Newest first: r2's three, then r1's last one (bob's).
    assert ids(first) == in_r2[::-1] + [in_r1[4]]
    rooms = first["groups"]["room_id"]
    assert rooms[r2] == {"results": in_r2[::-1], "order": 1}  # no next_batch: r2 has no more
    assert rooms[r1]["results"] == [in_r1[4]] and rooms[r1]["order"] == 2 and rooms[r1]["next_batch"]
    senders = first["groups"]["sender"]
    assert senders[alice]["results"] == in_r2[::-1] and senders[alice]["order"] == 1
    assert senders[bob]["results"] == [in_r1[4]] and senders[bob]["order"] == 2
    assert senders[alice]["next_batch"] and senders[bob]["next_batch"]  # both have older ones in r1
    assert [eid for p in pages for eid in ids(p)] == in_r1[:4][::-1]  # the rest of r1, none of r2
    assert [len(p["results"]) for p in pages] == [2, 2] and all(p["count"] == 5 for p in pages)
    assert ids(bob_rest) == [in_r1[2], in_r1[0]] and "next_batch" not in bob_rest


def test_highlights_prefixes_accents_and_phrases(world):
    stem = word()

    async def flow():
        async with Users(world) as u:
            room = await create_room(u["alice"])
            e1 = await send(u["alice"], room, f"The {stem}ings are LATE, see Café Müller")
            e2 = await send(u["alice"], room, f"one {stem} here")
            prefix = await search(u["alice"], stem)
            accents = await search(u["alice"], f"cafe MULLER {stem}")
            phrase = await search(u["alice"], f'"are late" {stem}')
            wrong_order = await search(u["alice"], f'"late are" {stem}')
            either = await search(u["alice"], f"{stem}ings OR nosuchword{stem}")
            negated = await search(u["alice"], f"{stem} -cafe")
            return e1, e2, prefix, accents, phrase, wrong_order, either, negated

    e1, e2, prefix, accents, phrase, wrong_order, either, negated = run(flow())
    assert set(ids(prefix)) == {e1, e2}
    assert set(prefix["highlights"]) == {f"{stem}ings", stem}
    assert ids(accents) == [e1] and {"Café", "Müller", f"{stem}ings"} <= set(accents["highlights"])
    assert ids(phrase) == [e1] and {"are", "LATE"} <= set(phrase["highlights"])
    assert ids(wrong_order) == []
    assert ids(either) == [e1]
    assert ids(negated) == [e2] and "Café" not in negated["highlights"]


def test_event_context_profiles_and_state(world):
    w = word()

    async def flow():
        async with Users(world) as u:
            alice, bob = u["alice"], u["bob"]
            room = await create_room(alice, name="context room")
            await join(alice, bob, room)
            await bob.set_displayname("Bob Then")
            before = [await send(alice, room, f"before {i}") for i in range(3)]
            topic = await put_state(alice, room, "m.room.topic", {"topic": "just before"})
            hit = await send(bob, room, f"the {w} message")
            after = [await send(alice, room, f"after {i}") for i in range(3)]
            await bob.set_displayname("Bob Now")
            res = await search(alice, w, include_state=True,
                               event_context={"before_limit": 2, "after_limit": 1, "include_profile": True})
            # The filter applies to the context too, wildcards included.
            messages_only = await search(alice, w, filter={"types": ["m.room.message"]},
                                         event_context={"before_limit": 2, "after_limit": 0})
            wildcard = await search(alice, w, filter={"types": ["m.room.mess*"]},
                                    event_context={"before_limit": 2, "after_limit": 0})
            plain = await search(alice, w)
            return room, before, topic, hit, after, res, messages_only, wildcard, plain

    room, before, topic, hit, after, res, messages_only, wildcard, plain = run(flow())
    assert ids(res) == [hit]
    ctx = res["results"][0]["context"]
    assert [e["event_id"] for e in ctx["events_before"]] == [topic, before[2]]
    assert [e["event_id"] for e in ctx["events_after"]] == [after[0]]
    only = messages_only["results"][0]["context"]
    assert [e["event_id"] for e in only["events_before"]] == [before[2], before[1]]
    assert only["events_after"] == [] and "profile_info" not in only
    # As in /messages, the limit counts before wildcards are matched: fewer, never the topic.
    wild = wildcard["results"][0]["context"]
    assert [e["event_id"] for e in wild["events_before"]] == [before[2]]
    assert ctx["start"] and ctx["end"]
    bob_id = res["results"][0]["result"]["sender"]
    # The profile as it was when the message was sent, not the current one.
    assert ctx["profile_info"][bob_id] == {"displayname": "Bob Then"}
    assert ctx["profile_info"][ctx["events_after"][0]["sender"]]["displayname"]
    state = res["state"][room]
    assert {(e["type"], e.get("state_key")) for e in state} >= {("m.room.create", ""), ("m.room.name", "")}
    assert next(e for e in state if e["type"] == "m.room.member" and e["state_key"] == bob_id)[
        "content"]["displayname"] == "Bob Now"
    assert "context" not in plain["results"][0] and "state" not in plain and "groups" not in plain
    assert res["results"][0]["result"]["room_id"] == room and res["results"][0]["result"]["content"]["body"]


# ---- who sees what ---------------------------------------------------------------------

def test_left_user_finds_history_only_up_to_leaving(world):
    w = word()

    async def flow():
        async with Users(world) as u:
            alice, carol = u["alice"], u["carol"]
            room = await create_room(alice)
            early = await send(alice, room, f"{w} before carol joined")  # shared history: visible
            await join(alice, carol, room)
            during = await send(alice, room, f"{w} while carol is here")
            await carol.room_leave(room)
            late = await send(alice, room, f"{w} after carol left")
            await put_state(alice, room, "m.room.topic", {"topic": f"{w} topic after leaving"})
            return early, during, late, await search(carol, w), await search(alice, w)

    early, during, late, carol_sees, alice_sees = run(flow())
    assert set(ids(carol_sees)) == {early, during} and carol_sees["count"] == 2
    assert late in ids(alice_sees) and alice_sees["count"] == 4


def test_bundles_of_results_leave_out_what_came_after_leaving(world):
    """A result's bundled aggregations (unsigned.m.relations) hold only relations the
    asker may see: not a thread reply or an edit sent after they left."""
    w = word()

    async def flow():
        async with Users(world) as u:
            alice, carol = u["alice"], u["carol"]
            room = await create_room(alice, initial_state=[{"type": "m.room.history_visibility", "state_key": "",
                                                             "content": {"history_visibility": "joined"}}])
            await join(alice, carol, room)
            root = await send(alice, room, f"{w} root")
            await carol.room_leave(room)
            await send(alice, room, "a reply carol never saw", **{
                "m.relates_to": {"rel_type": "m.thread", "event_id": root}})
            await send(alice, room, f"* {w} edited", **{
                "m.new_content": {"msgtype": "m.text", "body": f"{w} edited"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": root}})
            return root, await search(carol, w), await search(alice, w)

    root, carol_sees, alice_sees = run(flow())
    assert ids(carol_sees) == [root] == ids(alice_sees)
    assert "m.relations" not in carol_sees["results"][0]["result"].get("unsigned", {})
    assert set(alice_sees["results"][0]["result"]["unsigned"]["m.relations"]) == {"m.thread", "m.replace"}


def test_joined_history_visibility_hides_what_came_before_joining(world):
    w = word()

    async def flow():
        async with Users(world) as u:
            alice, dave = u["alice"], u["dave"]
            room = await create_room(alice, initial_state=[{"type": "m.room.history_visibility", "state_key": "",
                                                             "content": {"history_visibility": "joined"}}])
            hidden = await send(alice, room, f"{w} before dave joined")
            await alice.room_invite(room, dave.user_id)
            invited = await send(alice, room, f"{w} while dave is invited")
            await dave.join(room)
            seen = await send(alice, room, f"{w} after dave joined")
            return hidden, invited, seen, await search(dave, w), await search(dave, w, order_by="recent")

    hidden, invited, seen, by_rank, recent = run(flow())
    assert ids(by_rank) == ids(recent) == [seen] and by_rank["count"] == 1


def test_rooms_never_joined_and_other_tenants_stay_hidden(world):
    w = word()

    async def flow():
        async with Users(world) as u:
            alice, bob, mallory = u["alice"], u["bob"], u["mallory"]
            acme_room = await create_room(alice, name=f"{w} acme")
            secret = await send(alice, acme_room, f"{w} acme secret")
            globex_room = await create_room(mallory, name=f"{w} globex")
            await send(mallory, globex_room, f"{w} globex news")
            return {
                "acme_room": acme_room, "globex_room": globex_room, "secret": secret,
                # bob (same tenant) was never in alice's room; mallory is another tenant.
                "bob": await search(bob, w),
                "bob_named": await search(bob, w, filter={"rooms": [acme_room]}),
                "mallory": await search(mallory, w),
                "mallory_named": await search(mallory, w, filter={"rooms": [acme_room]}),
                "mallory_missing": await search(mallory, w, filter={"rooms": ["!nosuchroom:test.local"]}),
                "alice_named": await search(alice, w, filter={"rooms": [globex_room]}),
                "alice": await search(alice, w),
            }

    r = run(flow())
    assert r["bob"]["results"] == [] and r["bob"]["count"] == 0 and r["bob_named"]["results"] == []
    assert all(res["result"]["room_id"] == r["globex_room"] for res in r["mallory"]["results"])
    assert r["mallory"]["count"] == 2
    # Naming another tenant's room answers exactly as naming a room that does not exist.
    assert r["mallory_named"] == r["mallory_missing"] == {"results": [], "count": 0, "highlights": []}
    assert r["alice_named"]["results"] == []
    assert r["alice"]["count"] == 2 and r["secret"] in ids(r["alice"])


def test_a_user_moved_to_another_tenant_no_longer_searches_the_old_rooms(world):
    w = word()
    srv, admin, accounts = world

    async def flow(step: str):
        async with Users(world) as u:
            if step == "before":
                room = await create_room(u["alice"])
                await join(u["alice"], u["trent"], room)
                await send(u["alice"], room, f"{w} acme only")
            return await search(u["trent"], w)

    assert run(flow("before"))["count"] == 1
    status, _ = admin.request("PUT", f"/_homeserver/admin/v1/users/{accounts['trent'].user_id}/tenant",
                              {"tenant_id": "globex"})
    assert status == 200
    # The server caches tenants: the admin API updates the cache it reads.
    assert run(flow("after"))["count"] == 0


# ---- edits and redactions --------------------------------------------------------------

def test_edited_message_is_found_by_its_latest_text_only(world):
    old, new, newer, bobs = word(), word(), word(), word()

    async def flow():
        async with Users(world) as u:
            alice, bob = u["alice"], u["bob"]
            room = await create_room(alice)
            await join(alice, bob, room)
            original = await send(alice, room, f"the {old} text")

            async def edit(client, body):
                return await send(client, room, f"* {body}", **{
                    "m.new_content": {"msgtype": "m.text", "body": body},
                    "m.relates_to": {"rel_type": "m.replace", "event_id": original}})

            first_edit = await edit(alice, f"the {new} text")
            s1 = {k: await search(alice, k) for k in (old, new)}
            second_edit = await edit(alice, f"the {newer} text")
            s2 = {k: await search(alice, k) for k in (old, new, newer)}
            # Someone else's "edit" is no edit: it stays a message of its own.
            foreign = await edit(bob, f"the {bobs} text")
            s3 = {k: await search(alice, k) for k in (newer, bobs)}
            # Redacting the latest edit brings back the one before it.
            await alice.room_redact(room, second_edit)
            s4 = {k: await search(alice, k) for k in (new, newer)}
            return original, first_edit, second_edit, foreign, s1, s2, s3, s4

    original, first_edit, second_edit, foreign, s1, s2, s3, s4 = run(flow())
    assert ids(s1[old]) == [] and ids(s1[new]) == [original]
    assert ids(s2[old]) == ids(s2[new]) == [] and ids(s2[newer]) == [original]
    assert s2[newer]["results"][0]["result"]["content"]["body"] == f"the {old} text"  # the event as stored
    assert ids(s3[newer]) == [original] and ids(s3[bobs]) == [foreign]
    assert ids(s4[newer]) == [] and ids(s4[new]) == [original]
    for s in (s1, s2, s3, s4):
        for res in s.values():
            assert first_edit not in ids(res) and second_edit not in ids(res)


def test_redacted_messages_names_and_topics_are_not_found(world):
    w = word()

    async def flow():
        async with Users(world) as u:
            alice = u["alice"]
            room = await create_room(alice)
            keep = await send(alice, room, f"{w} stays")
            gone = await send(alice, room, f"{w} goes")
            topic = await put_state(alice, room, "m.room.topic", {"topic": f"{w} topic"})
            edited = await send(alice, room, "plain")
            await send(alice, room, "* edit", **{"m.new_content": {"msgtype": "m.text", "body": f"{w} edited"},
                                                 "m.relates_to": {"rel_type": "m.replace", "event_id": edited}})
            before = await search(alice, w)
            for target in (gone, topic, edited):
                await alice.room_redact(room, target)
            return keep, gone, topic, edited, before, await search(alice, w)

    keep, gone, topic, edited, before, after = run(flow())
    assert set(ids(before)) == {keep, gone, topic, edited}
    assert ids(after) == [keep] and after["count"] == 1


# ---- bad input -------------------------------------------------------------------------

BAD_BODIES = [
    ({}, "M_BAD_JSON"),
    ({"search_categories": []}, "M_BAD_JSON"),
    ({"search_categories": {"room_events": "x"}}, "M_BAD_JSON"),
    ({"search_categories": {"room_events": {}}}, "M_BAD_JSON"),
    ({"search_categories": {"room_events": {"search_term": 5}}}, "M_BAD_JSON"),
    ({"search_categories": {"room_events": {"search_term": "x", "keys": "content.body"}}}, "M_BAD_JSON"),
    ({"search_categories": {"room_events": {"search_term": "x", "keys": ["content.url"]}}}, "M_INVALID_PARAM"),
    ({"search_categories": {"room_events": {"search_term": "x", "order_by": "oldest"}}}, "M_INVALID_PARAM"),
    ({"search_categories": {"room_events": {"search_term": "x", "filter": []}}}, "M_INVALID_PARAM"),
    ({"search_categories": {"room_events": {"search_term": "x", "filter": {"limit": -1}}}}, "M_INVALID_PARAM"),
    ({"search_categories": {"room_events": {"search_term": "x", "filter": {"rooms": "!a:b"}}}}, "M_INVALID_PARAM"),
    ({"search_categories": {"room_events": {"search_term": "x", "groupings": []}}}, "M_BAD_JSON"),
    ({"search_categories": {"room_events": {"search_term": "x", "groupings": {"group_by": {}}}}}, "M_BAD_JSON"),
    ({"search_categories": {"room_events": {"search_term": "x", "groupings": {"group_by": [{"key": "type"}]}}}},
     "M_INVALID_PARAM"),
    ({"search_categories": {"room_events": {"search_term": "x", "event_context": {"before_limit": -1}}}},
     "M_INVALID_PARAM"),
    ({"search_categories": {"room_events": {"search_term": "x", "event_context": {"after_limit": "5"}}}},
     "M_BAD_JSON"),
    ({"search_categories": {"room_events": {"search_term": "x", "event_context": {"include_profile": 1}}}},
     "M_BAD_JSON"),
    ({"search_categories": {"room_events": {"search_term": "x", "include_state": "yes"}}}, "M_BAD_JSON"),
    ({"search_categories": {"room_events": {"search_term": "x" * 501}}}, "M_INVALID_PARAM"),
]


def test_bad_requests_get_the_spec_errors(world):
    async def flow():
        async with Users(world) as u:
            alice = u["alice"]
            out = [await raw_search(alice, body) for body, _ in BAD_BODIES]
            out.append(await raw_search(alice, None, raw=b"{not json"))
            out.append(await raw_search(alice, None, raw=b"[1]"))
            body = {"search_categories": {"room_events": {"search_term": "x"}}}
            for token in ("garbage", "!!!", "WyJyYW5rIl0", "W1tdXQ"):
                out.append(await raw_search(alice, body, next_batch=token))
            # A token of a "recent" search used for a "rank" one.
            room = await create_room(alice)
            w = word()
            await send_many(alice, room, [f"{w} {i}" for i in range(3)])
            page = await search(alice, w, order_by="recent", filter={"limit": 1})
            out.append(await raw_search(alice, {"search_categories": {"room_events": {"search_term": w}}},
                                        next_batch=page["next_batch"]))
            out.append(await raw_search(alice, body, token=None))
            out.append(await raw_search(alice, body, token="not-a-token"))
            return out

    out = run(flow())
    expected = [e for _, e in BAD_BODIES] + ["M_NOT_JSON", "M_BAD_JSON"] + ["M_INVALID_PARAM"] * 5
    for (status, body), errcode in zip(out, expected + ["M_MISSING_TOKEN", "M_UNKNOWN_TOKEN"]):
        assert body.get("errcode") == errcode, (errcode, status, body)
        assert status == (401 if errcode.endswith("TOKEN") else 400)


def test_requests_without_room_events_or_with_empty_terms_answer_empty(world):
    async def flow():
        async with Users(world) as u:
            return (await raw_search(u["alice"], {"search_categories": {}}),
                    await raw_search(u["alice"], {"search_categories": {"room_events": {"search_term": "  "}}}),
                    await raw_search(u["alice"], {"search_categories": {"room_events": {"search_term": "-x"}}}))

    (s1, b1), (s2, b2), (s3, b3) = run(flow())
    assert (s1, b1) == (200, {"search_categories": {}})
    empty = {"search_categories": {"room_events": {"results": [], "count": 0, "highlights": []}}}
    assert (s2, b2) == (s3, b3) == (200, empty)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(term=st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=60)
       | st.text(alphabet="'\"\\:*&|!<->()-. _aZ0OR\u0301\u00a8\x00\t", max_size=30))
def test_no_search_term_is_a_server_error(world, term):
    async def flow():
        async with Users(world) as u:
            return await raw_search(u["alice"], {"search_categories": {"room_events": {
                "search_term": term, "order_by": "rank", "event_context": {},
                "groupings": {"group_by": [{"key": "room_id"}]}}}})

    status, body = run(flow())
    assert status == 200, (term, body)
    assert isinstance(body["search_categories"]["room_events"]["count"], int)


# ---- language --------------------------------------------------------------------------

def test_language_change_rebuilds_the_index_and_unknown_languages_stop_start_up(tmp_path):
    srv = ServerProcess(tmp_path / "hs")
    srv.start()
    try:
        http = Http(srv.base_url)
        alice = http.register("alice")
        user = Http(srv.base_url, alice["access_token"])
        _, room = user.request("POST", f"{V3}/createRoom", {})
        user.request("PUT", f"{V3}/rooms/{room['room_id']}/send/m.room.message/t1",
                     {"msgtype": "m.text", "body": "The runners were running"})
        term = {"search_categories": {"room_events": {"search_term": "runs"}}}
        _, simple = user.request("POST", f"{V3}/search", term)
        assert simple["search_categories"]["room_events"]["count"] == 0  # no stemming in "simple"
        srv.stop()
        srv.config_path.write_text(srv.config_path.read_text() + "search:\n  language: english\n")
        srv.start()
        _, english = user.request("POST", f"{V3}/search", term)
        assert english["search_categories"]["room_events"]["count"] == 1  # run(s) ~ running
        assert "search index built with 'english' (1 events read)" in srv.log_text()
        srv.stop()
        srv.config_path.write_text(srv.config_path.read_text().replace("english", "klingon"))
        with pytest.raises(RuntimeError, match="no text search configuration 'klingon'"):
            srv.start()
    finally:
        srv.stop()
        srv.stop_postgres()
