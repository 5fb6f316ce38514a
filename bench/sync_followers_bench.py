"""Long-polls spread over several sync processes: message fan-out to the members of one
room, all long-polling, with the stream owner alone and with a second sync process
following it (half of the members on each), beside one writer and one client process on
one PostgreSQL.

    python -m bench.sync_followers_bench [--members 1000] [--messages 20] [--gap 0.25]
                                         [--markdown docs/scaling.md]

Reported per layout: delivery latency (from the send request's start to each member's
long-poll answer), and the CPU of the sync processes per delivery. On a machine with few
cores the processes compete for them with the writer, PostgreSQL and the load generator."""
from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.common import command_line, report
from bench.matrix_bench import Client, Syncers, make_room, pct, register, send
from bench.procstats import cpu_seconds
from tests.cluster import Cluster


async def run(cluster: Cluster, args) -> dict:
    url = cluster.url(cluster.clients[0])
    syncs = [cluster.sync, *cluster.readers]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        stamp = int(time.time())
        sender = await register(session, url, f"fs{stamp}")
        members = []
        for i in range(0, args.members, 50):
            members += await asyncio.gather(*(register(session, url, f"fm{j}x{stamp}")
                                              for j in range(i, min(i + 50, args.members))))
        room = await make_room(sender, members, "fan-out")
        syncers = Syncers([Client(session, cluster.url(syncs[i % len(syncs)]), m.user_id, m.token)
                           for i, m in enumerate(members)], room)
        await syncers.start()
        try:
            while syncers.ready < len(members):
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)
            pids = [cluster.procs[name].proc.pid for name in syncs]
            cpu0, load0, wall0 = sum(cpu_seconds(p) for p in pids), time.process_time(), time.perf_counter()
            for i in range(args.messages):
                body = f"fanout {i}"
                syncers.sent_at[body] = time.perf_counter()
                await send(sender, room, body)
                await asyncio.sleep(args.gap)
            await asyncio.sleep(3.0)
            cpu = sum(cpu_seconds(p) for p in pids) - cpu0
            load_share = (time.process_time() - load0) / (time.perf_counter() - wall0)
        finally:
            await syncers.stop()
    lat = syncers.message_latencies
    return {"sync_processes": len(syncs), "members": args.members, "messages": args.messages,
            "deliveries": len(lat), "expected": args.members * args.messages,
            "p50_ms": 1000 * pct(lat, 50), "p99_ms": 1000 * pct(lat, 99), "max_ms": 1000 * max(lat, default=0),
            "sync_cpu_ms_per_delivery": 1000 * cpu / max(1, len(lat)),
            "load_generator_cores": load_share}


def table(results: list[dict]) -> str:
    lines = ["| sync processes | members long-polling | deliveries | p50 ms | p99 ms | max ms |"
             " CPU of the sync processes per delivery (ms) | load generator (cores) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['sync_processes']} | {r['members']} | {r['deliveries']}/{r['expected']} |"
                     f" {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['max_ms']:.0f} | {r['sync_cpu_ms_per_delivery']:.3f} |"
                     f" {r['load_generator_cores']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, default=1000)
    p.add_argument("--messages", type=int, default=20)
    p.add_argument("--gap", type=float, default=0.25, help="seconds between messages")
    p.add_argument("--json")
    p.add_argument("--markdown")
    args = p.parse_args()
    results = []
    for readers in ([], ["sync2"]):
        cluster = Cluster(Path(tempfile.mkdtemp(prefix="sync-followers-bench-")), writers=["w1"], readers=readers,
                          extra_config="log_level: WARNING\n")
        try:
            cluster.start()
            results.append(asyncio.run(run(cluster, args)))
            print(table(results[-1:]), flush=True)
        finally:
            cluster.stop()
    report(results, table(results), args.json, args.markdown,
           heading=f"Long-polls over several sync processes ({command_line('bench.sync_followers_bench')})")


if __name__ == "__main__":
    main()
