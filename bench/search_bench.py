"""Server-side search benchmark, over the client-server API only, so it runs the same
against our server, Synapse or any homeserver URL with open registration.

    python -m bench.search_bench --ours                 # start ours on a fresh database
    python -m bench.search_bench --url http://host:8008 # an already running homeserver
    python -m bench.search_bench --synapse              # Synapse, via the anchor script
    python -m bench.search_bench --url URL --resume-room ROOM --resume-tag TAG
                                  # finish filling a room an interrupted run left, then search it

It fills one room with --messages messages (default 100,000) from --senders concurrent
users, planting terms of known frequency, then times POST /search for each term, in
both orders, as a member of the room: p50/p99 latency and the count each search reports.
Terms: common (about a third of the messages), medium (1%), rare (10 messages), a
two-word phrase, a prefix and a word that is nowhere."""
from __future__ import annotations

import argparse
import asyncio
import collections
import random
import sys
import time
import uuid
from typing import Awaitable, Callable

import aiohttp

from bench.common import add_target_args, command_line, each_target, report
from bench.matrix_bench import Client, pct, register

VOCABULARY = [w for w in """
    report order customer ship deliver warehouse stock price quote update status please thanks
    today tomorrow call team review draft final approve check send received question answer
    project budget plan sales support ticket issue fixed open closed payment account contract
    monday friday week month quarter north south office remote laptop server backup schedule
    """.split()]
COMMON, MEDIUM, RARE, MISSING = "meeting", "invoice", "zephyrine", "qwxzyvbnmk"
TERMS = {"common": COMMON, "medium": MEDIUM, "rare": RARE, "phrase": '"overdue invoice"',
         "prefix": "warehou", "missing": MISSING}


def bodies(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    rare_at = set(rng.sample(range(n), min(10, n)))
    out = []
    for i in range(n):
        words = rng.choices(VOCABULARY, k=rng.randint(4, 14))
        if rng.random() < 0.33:
            words.insert(rng.randrange(len(words) + 1), COMMON)
        if rng.random() < 0.01:
            at = rng.randrange(len(words) + 1)
            words[at:at] = ["overdue", MEDIUM]
        if i in rare_at:
            words.append(RARE)
        out.append(" ".join(words))
    return out


async def fill(owner: Client, senders: list[Client], room_id: str, texts: list[str], in_flight: int) -> dict:
    queue = list(enumerate(texts))
    queue.reverse()
    done = 0
    t0 = time.perf_counter()

    async def worker(c: Client, k: int) -> None:
        nonlocal done
        while queue:
            i, body = queue.pop()
            await c.ok("PUT", f"/rooms/{room_id}/send/m.room.message/s{k}-{i}-{uuid.uuid4().hex[:6]}",
                       {"msgtype": "m.text", "body": body})
            done += 1
            if done % 10_000 == 0:
                print(f"  {done} messages, {done / (time.perf_counter() - t0):.0f}/s", file=sys.stderr)

    await asyncio.gather(*(worker(senders[k % len(senders)], k) for k in range(in_flight)))
    wall = time.perf_counter() - t0
    return {"messages": len(texts), "seconds": wall, "msgs_per_s": len(texts) / wall}


async def login(session: aiohttp.ClientSession, base: str, name: str) -> Client:
    """Sign in as a user `register` created earlier (same password rule)."""
    c = Client(session, base)
    data = await c.ok("POST", "/login", {"type": "m.login.password", "password": "bench-pw-" + name,
                                         "identifier": {"type": "m.id.user", "user": name}})
    c.user_id, c.token = data["user_id"], data["access_token"]
    return c


async def bench_users(session: aiohttp.ClientSession, base_url: str, tag: str, count: int,
                      sign_in: Callable[[aiohttp.ClientSession, str, str], Awaitable[Client]]) -> list[Client]:
    """The run's users q<tag>x0, q<tag>x1, ..., ten at a time (`register` or `login`)."""
    users: list[Client] = []
    for i in range(0, count, 10):
        users += await asyncio.gather(*(sign_in(session, base_url, f"q{tag}x{j}") for j in range(i, min(i + 10, count))))
    return users


async def bodies_in_room(c: Client, room_id: str) -> collections.Counter:
    """Every m.room.message body already in the room, paged backwards with /messages."""
    found: collections.Counter = collections.Counter()
    params = {"dir": "b", "limit": "1000", "filter": '{"types":["m.room.message"]}'}
    while True:
        page = await c.ok("GET", f"/rooms/{room_id}/messages", params=params)
        found.update(e["content"].get("body") for e in page.get("chunk", []) if e.get("type") == "m.room.message")
        if not page.get("chunk") or "end" not in page:
            return found
        params["from"] = page["end"]


def still_missing(wanted: list[str], present: collections.Counter) -> list[str]:
    """The bodies of `wanted` not yet in the room, counting repeats, in their order."""
    left = collections.Counter(present)
    out = []
    for body in wanted:
        if left[body] > 0:
            left[body] -= 1
        else:
            out.append(body)
    return out


async def timed_search(c: Client, term: str, order: str) -> tuple[float, int | None]:
    body = {"search_categories": {"room_events": {"search_term": term, "order_by": order}}}
    t0 = time.perf_counter()
    status, data = await c.req("POST", "/search", body)
    elapsed = time.perf_counter() - t0
    if status != 200:
        raise RuntimeError(f"search {term!r} -> {status} {data}")
    return elapsed, data["search_categories"]["room_events"].get("count")


async def run_target(base_url: str, args) -> dict:
    tag = uuid.uuid4().hex[:6]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        texts = bodies(args.messages)
        if args.resume_room:
            # Finish filling a room an interrupted run left behind (same deterministic
            # bodies, same users), so a slow server need not start again from nothing.
            tag, room_id = args.resume_tag, args.resume_room
            print(f"[{base_url}] signing in {args.senders} users to resume {room_id}", file=sys.stderr)
            senders = await bench_users(session, base_url, tag, args.senders, login)
            present = await bodies_in_room(senders[0], room_id)
            already = sum(present.values())
            missing = still_missing(texts, present)
            if already != len(texts) - len(missing):
                raise SystemExit(f"{room_id} holds bodies that --messages {args.messages} does not make: "
                                 "give the interrupted run's --messages")
            print(f"{already} messages already in the room; sending the {len(missing)} missing", file=sys.stderr)
            results: dict = {"fill": {**await fill(senders[0], senders, room_id, missing, args.in_flight),
                                      "resumed_with": already}}
        else:
            print(f"[{base_url}] registering {args.senders} users", file=sys.stderr)
            senders = await bench_users(session, base_url, tag, args.senders, register)
            owner = senders[0]
            room_id = (await owner.ok("POST", "/createRoom", {"name": "search bench", "preset": "public_chat"}))["room_id"]
            for i in range(1, len(senders), 10):
                await asyncio.gather(*(c.ok("POST", f"/rooms/{room_id}/join", {}) for c in senders[i:i + 10]))
            print(f"filling the room with {args.messages} messages (tag {tag}, room {room_id})", file=sys.stderr)
            results = {"fill": await fill(owner, senders, room_id, texts, args.in_flight)}
        await asyncio.sleep(args.settle)  # let a server that indexes in the background catch up
        searcher = senders[-1]
        searches: dict = {}
        for name, term in TERMS.items():
            for order in ("rank", "recent"):
                await timed_search(searcher, term, order)  # warm-up
                times, counts = [], set()
                for _ in range(args.repeats):
                    elapsed, count = await timed_search(searcher, term, order)
                    times.append(elapsed)
                    counts.add(count)
                searches[f"{name} ({order})"] = {
                    "term": term, "count": sorted(counts, key=str),
                    "p50_ms": 1000 * pct(times, 50), "p99_ms": 1000 * pct(times, 99)}
                print(f"  {name:8} {order:6} p50 {1000 * pct(times, 50):7.1f} ms  "
                      f"p99 {1000 * pct(times, 99):7.1f} ms  count {sorted(counts, key=str)}", file=sys.stderr)
        results["search"] = searches
    return results


def markdown(results: dict[str, dict], command: str) -> str:
    names = list(results)
    lines = [f"Command: `{command}`", ""]
    for name, r in results.items():
        f = r["fill"]
        resumed = f" (resuming a room that already held {f['resumed_with']})" if "resumed_with" in f else ""
        lines.append(f"- {name}: {f['messages']} messages sent in {f['seconds']:.0f} s ({f['msgs_per_s']:.0f}/s){resumed}")
    lines += ["", "| search (order) | " + " | ".join(f"{n} p50 ms | {n} p99 ms | {n} count" for n in names) + " |",
              "|---|" + "---:|---:|---:|" * len(names)]
    for key in next(iter(results.values()))["search"]:
        cells = []
        for n in names:
            s = results[n]["search"][key]
            cells += [f"{s['p50_ms']:.1f}", f"{s['p99_ms']:.1f}", "/".join(str(c) for c in s["count"])]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_target_args(p, ours_port=18449)
    p.add_argument("--url", help="measure an already running homeserver (registration must be open)")
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--senders", type=int, default=50)
    p.add_argument("--in-flight", type=int, default=100, help="concurrent send requests")
    p.add_argument("--repeats", type=int, default=30, help="timed searches per term and order")
    p.add_argument("--settle", type=float, default=1.0, help="seconds to wait between filling and searching")
    p.add_argument("--resume-room", help="finish filling this room from an interrupted run, then search it")
    p.add_argument("--resume-tag", help="the interrupted run's user tag (its users are q<tag>x0, q<tag>x1, ...)")
    p.add_argument("--json", help="write the raw results here")
    p.add_argument("--markdown", help="append the table here under a heading")
    args = p.parse_args()
    if not (args.ours or args.url or args.synapse):
        p.error("choose at least one of --ours, --url, --synapse")
    if bool(args.resume_room) != bool(args.resume_tag):
        p.error("--resume-room and --resume-tag go together")
    if args.resume_room and sum(map(bool, (args.ours, args.url, args.synapse))) != 1:
        p.error("--resume-room names a room on one server: choose one target")
    results = asyncio.run(each_target(args, lambda target: run_target(target.base_url, args), "search-bench-ours-"))
    report(results, markdown(results, command_line("bench.search_bench")), args.json, args.markdown,
           heading="Search, run")


if __name__ == "__main__":
    main()
