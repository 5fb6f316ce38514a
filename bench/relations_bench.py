"""Relations and threads under load, over the client-server API only (like
bench/matrix_bench.py, whose server start-up and client it reuses): a room with 1,000
threads (each root with replies, an edit and a reaction) and one long thread, then

- /threads: the first page (repeated), every page to the end, include=participated;
- /relations of a thread root (repeated), the long thread paged backwards and, with
  recurse=true, its replies' reactions too;
- /messages pages of 50 (from the end: the long thread, then the threads' events), whose
  bundled aggregations are computed on the first read (cold) and come from memory on the
  second (warm).

    python -m bench.relations_bench --ours [--synapse] [--threads 1000] [--json out.json]

Latencies are medians / p95 of wall time to the last byte; CPU is the server's and its
PostgreSQL's, per request."""
from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.matrix_bench import Client, Target, make_room, pct, register, start_ours, synapse_target, txn
from bench.procstats import CpuMeter

V1 = "/_matrix/client/v1"


async def v1(c: Client, path: str, params: dict | None = None) -> tuple[float, dict]:
    t0 = time.perf_counter()
    async with c.session.get(c.base + V1 + path, params=params,
                             headers={"Authorization": f"Bearer {c.token}"}) as resp:
        raw = await resp.read()
    elapsed = time.perf_counter() - t0
    if resp.status != 200:
        raise RuntimeError(f"GET {path} -> {resp.status} {raw[:200]!r}")
    return elapsed, json.loads(raw)


async def put(c: Client, room_id: str, event_type: str, content: dict) -> str:
    return (await c.ok("PUT", f"/rooms/{room_id}/send/{event_type}/{txn()}", content))["event_id"]


def message(body: str, rel_type: str | None = None, parent: str | None = None) -> dict:
    content: dict[str, Any] = {"msgtype": "m.text", "body": body}
    if rel_type:
        content["m.relates_to"] = {"rel_type": rel_type, "event_id": parent}
    return content


async def build_room(owner: Client, member: Client, threads: int, long_thread: int) -> dict:
    room_id = await make_room(owner, [member], "threads")
    roots: list[str] = []
    for start in range(0, threads, 20):  # 20 concurrent senders, as clients would
        roots += await asyncio.gather(*(put(owner, room_id, "m.room.message", message(f"topic {i}"))
                                        for i in range(start, min(start + 20, threads))))

    async def decorate(i: int, root: str) -> None:
        replier = member if i % 2 else owner
        await put(replier, room_id, "m.room.message", message(f"reply {i}", "m.thread", root))
        await put(owner, room_id, "m.room.message", {
            **message(f"* topic {i} (edited)", "m.replace", root),
            "m.new_content": {"msgtype": "m.text", "body": f"topic {i} (edited)"}})
        await put(member, room_id, "m.reaction",
                  {"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "👍"}})

    for start in range(0, threads, 20):
        await asyncio.gather(*(decorate(i, roots[i]) for i in range(start, min(start + 20, threads))))
    big = await put(owner, room_id, "m.room.message", message("the long thread"))
    for start in range(0, long_thread, 20):
        replies = await asyncio.gather(*(put(member, room_id, "m.room.message", message(f"long {i}", "m.thread", big))
                                         for i in range(start, min(start + 20, long_thread))))
        await asyncio.gather(*(put(owner, room_id, "m.reaction", {
            "m.relates_to": {"rel_type": "m.annotation", "event_id": r, "key": "👀"}}) for r in replies[:5]))
    return {"room_id": room_id, "roots": roots, "big": big}


async def timed(target: Target, n: int, call) -> dict:
    """n sequential calls: latency percentiles and CPU per call."""
    meter = CpuMeter(target.server_pid, target.postmaster_pid)
    meter.start()
    times = []
    for _ in range(n):
        elapsed, _ = await call()
        times.append(elapsed)
    server_cpu, pg_cpu = meter.stop()
    return {"calls": n, "median_ms": 1000 * statistics.median(times), "p95_ms": 1000 * pct(times, 95),
            "server_cpu_ms": 1000 * server_cpu / n, "pg_cpu_ms": 1000 * pg_cpu / n}


async def page_through(c: Client, path: str, params: dict) -> tuple[float, int, int]:
    """(milliseconds, pages, items) following next_batch to the end."""
    t0, pages, items, token = time.perf_counter(), 0, 0, None
    while True:
        _, body = await v1(c, path, {**params, **({"from": token} if token else {})})
        pages += 1
        items += len(body["chunk"])
        token = body.get("next_batch")
        if token is None:
            return 1000 * (time.perf_counter() - t0), pages, items


async def run_target(target: Target, args) -> dict:
    async with aiohttp.ClientSession() as session:
        tag = str(int(time.time()))
        owner = await register(session, target.base_url, f"rbo{tag}")
        member = await register(session, target.base_url, f"rbm{tag}")
        print(f"[{target.name}] building a room with {args.threads} threads", file=sys.stderr)
        t0 = time.perf_counter()
        room = await build_room(owner, member, args.threads, args.long_thread)
        results: dict[str, Any] = {"threads": args.threads, "long_thread": args.long_thread,
                                   "setup_s": time.perf_counter() - t0}
        rid = room["room_id"]

        # Bundles: the first read of each page computes them, the second is served from memory.
        cold, warm = [], []
        token = None
        for _ in range(5):
            params = {"dir": "b", "limit": "50", **({"from": token} if token else {})}
            for bucket in (cold, warm):
                t0 = time.perf_counter()
                status, body = await member.req("GET", f"/rooms/{rid}/messages", params=params)
                bucket.append(time.perf_counter() - t0)
                assert status == 200, body
            token = body["end"]
        results["messages_50_cold_median_ms"] = 1000 * statistics.median(cold)
        results["messages_50_warm_median_ms"] = 1000 * statistics.median(warm)

        print(f"[{target.name}] /threads", file=sys.stderr)
        results["threads_first_page"] = await timed(
            target, args.repeats, lambda: v1(member, f"/rooms/{rid}/threads", {"limit": "20"}))
        results["threads_participated_first_page"] = await timed(
            target, args.repeats, lambda: v1(member, f"/rooms/{rid}/threads",
                                             {"limit": "20", "include": "participated"}))
        ms, pages, items = await page_through(member, f"/rooms/{rid}/threads", {"limit": "100"})
        results["threads_all_pages"] = {"ms": ms, "pages": pages, "roots": items}

        print(f"[{target.name}] /relations", file=sys.stderr)
        root = room["roots"][len(room["roots"]) // 2]
        results["relations_of_a_root"] = await timed(
            target, args.repeats, lambda: v1(member, f"/rooms/{rid}/relations/{root}"))
        results["relations_long_thread_first_page"] = await timed(
            target, args.repeats, lambda: v1(member, f"/rooms/{rid}/relations/{room['big']}/m.thread",
                                             {"limit": "50"}))
        ms, pages, items = await page_through(member, f"/rooms/{rid}/relations/{room['big']}",
                                              {"limit": "50"})
        results["relations_long_thread_all_pages"] = {"ms": ms, "pages": pages, "events": items}
        ms, pages, items = await page_through(member, f"/rooms/{rid}/relations/{room['big']}",
                                              {"limit": "50", "recurse": "true"})
        results["relations_long_thread_recursive_all_pages"] = {"ms": ms, "pages": pages, "events": items}
    return results


def markdown(results: dict[str, dict], command: str) -> str:
    lines = ["| measure | " + " | ".join(results) + " |", "|---|" + "---:|" * len(results)]

    def row(label: str, path: tuple) -> None:
        cells = []
        for r in results.values():
            v: Any = r
            for p in path:
                v = v.get(p) if isinstance(v, dict) else None
            cells.append(f"{v:.1f}" if isinstance(v, (int, float)) else "-")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")

    row("/threads first page (20), median ms", ("threads_first_page", "median_ms"))
    row("/threads first page (20), p95 ms", ("threads_first_page", "p95_ms"))
    row("/threads first page, server CPU ms", ("threads_first_page", "server_cpu_ms"))
    row("/threads include=participated (20), median ms", ("threads_participated_first_page", "median_ms"))
    row("/threads, all pages of 100, total ms", ("threads_all_pages", "ms"))
    row("/relations of a root, median ms", ("relations_of_a_root", "median_ms"))
    row("/relations of a root, server CPU ms", ("relations_of_a_root", "server_cpu_ms"))
    row("/relations long thread, page of 50, median ms", ("relations_long_thread_first_page", "median_ms"))
    row("/relations long thread, all pages of 50, total ms", ("relations_long_thread_all_pages", "ms"))
    row("/relations long thread recursive, all pages of 50, total ms",
        ("relations_long_thread_recursive_all_pages", "ms"))
    row("/messages page of 50, first read, median ms", ("messages_50_cold_median_ms",))
    row("/messages page of 50, read again, median ms", ("messages_50_warm_median_ms",))
    return f"Command: `{command}`\n\n" + "\n".join(lines) + "\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def main_async(args) -> dict:
    results: dict[str, dict] = {}
    if args.ours:
        workdir = Path(tempfile.mkdtemp(prefix="bench-relations-"))
        proc, target = start_ours(workdir, args.ours_port or _free_port())
        try:
            results["ours"] = await run_target(target, args)
        finally:
            proc.terminate()
            proc.wait(60)
    if args.synapse:
        results["synapse"] = await run_target(synapse_target(Path(args.synapse_script)), args)
    return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ours", action="store_true", help="start and measure our server")
    p.add_argument("--ours-port", type=int, default=0, help="default: a free port")
    p.add_argument("--synapse", action="store_true", help="measure Synapse (started by the anchor script)")
    p.add_argument("--synapse-script", default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "synapse_anchor.sh"))
    p.add_argument("--threads", type=int, default=1000)
    p.add_argument("--long-thread", type=int, default=300, help="replies in the one long thread")
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--json", help="write the raw results here")
    args = p.parse_args()
    results = asyncio.run(main_async(args))
    print(json.dumps(results, indent=2))
    print(markdown(results, "python -m bench.relations_bench " + " ".join(sys.argv[1:])))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
