"""Moving rooms between writers while they run: what senders see while a third writer is
added to two (`homeserver writers --set`), on one PostgreSQL with a sync and a client
process.

    python -m bench.writer_move_bench [--senders 16] [--before 3] [--after 3]
                                      [--markdown docs/scaling.md]

Each sender owns a room and sends through the client process as fast as it is answered.
Reported: how long the command took (from writing the new layout to every release), the
sends that failed, and for the rooms that moved and those that stayed, the send latency
before the move and around it, and each room's longest gap between two answered sends
(the pause a room saw)."""
from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import aiohttp

from bench.common import command_line, report
from bench.matrix_bench import make_room, pct, register, txn
from homeserver.sharding import writer_for_room
from tests.cluster import Cluster


async def run(cluster: Cluster, args) -> dict:
    url = cluster.url(cluster.clients[0])
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        users = [await register(session, url, f"m{i}x{int(time.time())}") for i in range(args.senders)]
        rooms = [await make_room(u, [], f"room {i}") for i, u in enumerate(users)]
        cluster.add_writer("w3")
        after = ["w1", "w2", "w3"]
        moved = {r for r in rooms if writer_for_room(r, ["w1", "w2"]) != writer_for_room(r, after)}
        samples: list[tuple[str, float, float, int]] = []  # room, started, latency, status
        stop = asyncio.Event()

        async def sender(c, room_id: str) -> None:
            while not stop.is_set():
                t0 = time.perf_counter()
                status, _ = await c.req("PUT", f"/rooms/{room_id}/send/m.room.message/{txn()}",
                                        {"msgtype": "m.text", "body": "moving"})
                samples.append((room_id, t0, time.perf_counter() - t0, status))

        tasks = [asyncio.create_task(sender(u, r)) for u, r in zip(users, rooms)]
        await asyncio.sleep(args.before)
        move_start = time.perf_counter()
        done = await asyncio.to_thread(cluster.writers_command, "--set", ",".join(after))
        move_end = time.perf_counter()
        await asyncio.sleep(args.after)
        stop.set()
        await asyncio.gather(*tasks)
    if done.returncode != 0:
        raise RuntimeError(done.stdout + done.stderr)

    def window(which: set[str], lo: float, hi: float) -> list[float]:
        return [lat for room, t0, lat, status in samples if room in which and lo <= t0 < hi and status == 200]

    def longest_gap(room: str) -> float:
        ends = sorted(t0 + lat for r, t0, lat, status in samples if r == room and status == 200)
        return max((b - a for a, b in zip(ends, ends[1:])), default=float("nan"))

    stayed = set(rooms) - moved
    around = (move_start - 0.2, move_end + 0.5)
    result: dict = {"senders": args.senders, "rooms_moved": len(moved), "rooms_stayed": len(stayed),
                    "move_ms": 1000 * (move_end - move_start),
                    "sends": len(samples), "failed": sum(1 for *_, s in samples if s != 200)}
    for name, which in (("moved", moved), ("stayed", stayed)):
        before = window(which, 0, move_start - 0.5)
        during = window(which, *around)
        result[name] = {
            "before_p50_ms": 1000 * pct(before, 50), "before_p99_ms": 1000 * pct(before, 99),
            "around_p50_ms": 1000 * pct(during, 50), "around_max_ms": 1000 * max(during, default=float("nan")),
            "longest_gap_ms": 1000 * max((longest_gap(r) for r in which), default=float("nan")),
        }
    return result


def table(r: dict) -> str:
    lines = [f"Senders {r['senders']} (a room each; {r['rooms_moved']} moved to the new writer, "
             f"{r['rooms_stayed']} stayed); the move took {r['move_ms']:.0f} ms (command start to the last "
             f"release, including starting the CLI's Python); {r['sends']} sends, {r['failed']} failed.",
             "",
             "| rooms | send p50 before (ms) | p99 before | p50 around the move | slowest around the move |"
             " longest gap between answered sends |",
             "|---|---|---|---|---|---|"]
    for name in ("moved", "stayed"):
        x = r[name]
        lines.append(f"| {name} | {x['before_p50_ms']:.1f} | {x['before_p99_ms']:.1f} | {x['around_p50_ms']:.1f} |"
                     f" {x['around_max_ms']:.1f} | {x['longest_gap_ms']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--senders", type=int, default=16)
    p.add_argument("--before", type=float, default=3.0, help="seconds of sending before the move")
    p.add_argument("--after", type=float, default=3.0, help="seconds of sending after it")
    p.add_argument("--json")
    p.add_argument("--markdown")
    args = p.parse_args()
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="writer-move-bench-")), extra_config="log_level: WARNING\n")
    try:
        cluster.start()
        result = asyncio.run(run(cluster, args))
    finally:
        cluster.stop()
    print(table(result), flush=True)
    report([result], table(result), args.json, args.markdown,
           heading=f"Moving rooms between writers ({command_line('bench.writer_move_bench')})")


if __name__ == "__main__":
    main()
