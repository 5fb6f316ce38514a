"""Push evaluation and unread counts, measured over the client-server API only, so the
same run works against our server and Synapse (which evaluates every member's push rules
too, and keeps the same counts).

    python -m bench.push_bench --ours                 # starts our server on a fresh database
    python -m bench.push_bench --synapse              # Synapse, via the anchor script
    python -m bench.push_bench --url http://host:8008 # any running server with open registration

Scenarios:
- CPU per message in a 1,000-member room (every member but the sender gets an unread
  notification), beside the same sends into a 2-member room: server and PostgreSQL CPU
  per message, from /proc. The difference is what evaluating and storing 999 members'
  notifications costs.
- /sync for a user in 500 rooms that all have unread counts: initial sync, idle
  incremental sync, and an incremental sync right after a new message (which changes one
  room's count)."""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

from bench.matrix_bench import Client, make_room, pct, register, send, start_ours, synapse_target, timed_sync
from bench.procstats import CpuMeter


async def _register_many(session: aiohttp.ClientSession, base: str, prefix: str, n: int) -> list[Client]:
    users: list[Client] = []
    for i in range(0, n, 25):
        users += await asyncio.gather(*(register(session, base, f"{prefix}{j}")
                                        for j in range(i, min(i + 25, n))))
    return users


async def _cpu_per_message(meter: CpuMeter, sender: Client, room_id: str, messages: int,
                           in_flight: int) -> dict:
    latencies: list[float] = []
    queue = list(range(messages))

    async def worker() -> None:
        while queue:
            i = queue.pop()
            t0 = time.perf_counter()
            await send(sender, room_id, f"push bench {i}")
            latencies.append(time.perf_counter() - t0)

    meter.start()
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    wall = time.perf_counter() - t0
    server_cpu, pg_cpu = meter.stop()
    return {"messages": messages, "msgs_per_s": messages / wall,
            "send_p50_ms": 1000 * pct(latencies, 50), "send_p99_ms": 1000 * pct(latencies, 99),
            "server_cpu_ms_per_msg": 1000 * server_cpu / messages,
            "pg_cpu_ms_per_msg": 1000 * pg_cpu / messages}


async def big_room(target, session, args, tag: str) -> dict:
    print(f"[{target.name}] registering {args.members} members", file=sys.stderr)
    members = await _register_many(session, target.base_url, f"pm{tag}x", args.members)
    owner, reader = members[0], members[1]
    room_id = await make_room(owner, members[1:], "thousand")
    small = await make_room(owner, [reader], "pair")
    await asyncio.sleep(2)  # let the joins settle
    meter = CpuMeter(target.server_pid, target.postmaster_pid)
    print(f"[{target.name}] {args.messages} messages into a 2-member room", file=sys.stderr)
    pair = await _cpu_per_message(meter, owner, small, args.messages, args.in_flight)
    print(f"[{target.name}] {args.messages} messages into a {args.members}-member room", file=sys.stderr)
    big = await _cpu_per_message(meter, owner, room_id, args.messages, args.in_flight)
    await asyncio.sleep(1)
    _, data, _ = await timed_sync(reader, {"timeout": "0"})
    unread = data["rooms"]["join"][room_id].get("unread_notifications", {})
    return {"members": args.members, "two_member_room": pair, "big_room": big,
            "reader_notification_count": unread.get("notification_count"),
            "push_cpu_ms_per_msg": big["server_cpu_ms_per_msg"] - pair["server_cpu_ms_per_msg"],
            "push_cpu_us_per_member": 1000 * (big["server_cpu_ms_per_msg"] - pair["server_cpu_ms_per_msg"])
            / max(1, args.members - 2)}


async def many_rooms(target, session, args, tag: str) -> dict:
    print(f"[{target.name}] a user in {args.rooms} rooms with unread counts", file=sys.stderr)
    owner = await register(session, target.base_url, f"po{tag}")
    user = await register(session, target.base_url, f"pu{tag}")
    rooms = []
    for i in range(args.rooms):  # one at a time: two v12 create events in one millisecond can collide
        rooms.append(await make_room(owner, [user], f"r{i}"))
        await send(owner, rooms[-1], f"unread in r{i}")
    initial = []
    for _ in range(5):
        elapsed, data, size = await timed_sync(user, {"timeout": "0"})
        initial.append(elapsed)
    counted = sum(1 for r in data["rooms"]["join"].values()
                  if r.get("unread_notifications", {}).get("notification_count"))
    since = data["next_batch"]
    idle = []
    for _ in range(args.idle_syncs):
        elapsed, data, _ = await timed_sync(user, {"since": since, "timeout": "0"})
        idle.append(elapsed)
        since = data["next_batch"]
    after_message = []
    for i in range(20):
        await send(owner, rooms[i % len(rooms)], f"new {i}")
        elapsed, data, _ = await timed_sync(user, {"since": since, "timeout": "0"})
        after_message.append(elapsed)
        since = data["next_batch"]
    return {"rooms": args.rooms, "rooms_with_unread": counted, "initial_sync_bytes": size,
            "initial_sync_median_ms": 1000 * statistics.median(initial),
            "idle_sync_median_ms": 1000 * statistics.median(idle), "idle_sync_p99_ms": 1000 * pct(idle, 99),
            "sync_after_message_median_ms": 1000 * statistics.median(after_message)}


async def run_target(target, args) -> dict:
    tag = uuid.uuid4().hex[:6]
    out = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session:
        if "big_room" in args.scenarios:
            out["big_room"] = await big_room(target, session, args, tag)
        if "many_rooms" in args.scenarios:
            out["many_rooms"] = await many_rooms(target, session, args, tag)
    return out


def markdown(results: dict[str, dict], command: str) -> str:
    rows = [
        ("server CPU per message, 2-member room (ms)", ("big_room", "two_member_room", "server_cpu_ms_per_msg")),
        ("server CPU per message, big room (ms)", ("big_room", "big_room", "server_cpu_ms_per_msg")),
        ("PostgreSQL CPU per message, big room (ms)", ("big_room", "big_room", "pg_cpu_ms_per_msg")),
        ("push evaluation + storage per message (server ms)", ("big_room", "push_cpu_ms_per_msg")),
        ("send latency p50, big room (ms)", ("big_room", "big_room", "send_p50_ms")),
        ("initial sync, 500 rooms with counts (ms)", ("many_rooms", "initial_sync_median_ms")),
        ("idle incremental sync (ms)", ("many_rooms", "idle_sync_median_ms")),
        ("incremental sync after a message (ms)", ("many_rooms", "sync_after_message_median_ms")),
    ]
    names = list(results)
    out = [f"Command: `{command}`", "", "| measure | " + " | ".join(names) + " |",
           "|---|" + "---:|" * len(names)]
    for label, path in rows:
        cells = []
        for name in names:
            v = results[name]
            for key in path:
                v = v.get(key, {}) if isinstance(v, dict) else {}
            cells.append(f"{v:.2f}" if isinstance(v, (int, float)) else "-")
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(out)


async def main_async(args) -> dict:
    results: dict[str, dict] = {}
    if args.ours:
        workdir = Path(tempfile.mkdtemp(prefix="push-bench-ours-"))
        proc, target = start_ours(workdir, args.ours_port)
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
    p.add_argument("--ours-port", type=int, default=18450)
    p.add_argument("--synapse", action="store_true", help="measure Synapse (started by the anchor script)")
    p.add_argument("--synapse-script",
                   default=str(Path(__file__).resolve().parent.parent.parent / "shared" / "synapse_anchor.sh"))
    p.add_argument("--members", type=int, default=1000)
    p.add_argument("--messages", type=int, default=300)
    p.add_argument("--in-flight", type=int, default=4, help="concurrent sends")
    p.add_argument("--rooms", type=int, default=500)
    p.add_argument("--idle-syncs", type=int, default=100)
    p.add_argument("--scenarios", default="big_room,many_rooms", type=lambda v: v.split(","),
                   help="comma-separated: big_room, many_rooms")
    p.add_argument("--json", help="write the raw results here")
    args = p.parse_args()
    if not (args.ours or args.synapse):
        p.error("choose --ours and/or --synapse")
    results = asyncio.run(main_async(args))
    print(json.dumps(results, indent=2))
    print(markdown(results, "python -m bench.push_bench " + " ".join(sys.argv[1:])))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
