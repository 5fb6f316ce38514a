"""Scale-out: send throughput and send-to-sync fan-out with 1, 2 and 4 writer processes
(plus a sync and a client process, on one PostgreSQL), beside the single process.

    python -m bench.scaleout_bench [--writers 1 2 4] [--senders 16] [--messages 40]
                                   [--markdown docs/scaling.md]

Senders each own a room (the rooms spread over the writers) and send through the client
process, as clients behind the proxy do; syncers long-poll the sync process. CPU is the
sum over the homeserver processes and PostgreSQL, per message. On a machine with few
cores the processes compete for them: read the CPU figures as much as the rates."""
from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import aiohttp

from bench.common import command_line, ours, report
from bench.matrix_bench import Client, Syncers, fanout, make_room, pct, register, send
from bench.procstats import cpu_seconds, postgres_cpu_seconds
from tests.cluster import Cluster


class Layout:
    def __init__(self, name: str, entry: str, sync_url: str, pids: list[int], postmaster: int | None) -> None:
        self.name, self.entry, self.sync_url, self.pids, self.postmaster = name, entry, sync_url, pids, postmaster

    def cpu(self) -> float:
        total = sum(cpu_seconds(p) for p in self.pids)
        return total + (postgres_cpu_seconds(self.postmaster) if self.postmaster else 0.0)


@contextmanager
def single() -> Iterator[Layout]:
    with ours("scaleout-bench-", extra_config="log_level: WARNING\n") as target:
        yield Layout("single process", target.base_url, target.base_url, [target.server_pid],
                     target.postmaster_pid)


@contextmanager
def cluster(writers: int) -> Iterator[Layout]:
    root = Path(tempfile.mkdtemp(prefix="scaleout-bench-"))
    c = Cluster(root, writers=[f"w{i + 1}" for i in range(writers)], extra_config="log_level: WARNING\n")
    try:
        c.start()
        postmaster = int((c.pgdata / "postmaster.pid").read_text().split()[0])
        yield Layout(f"{writers} writer{'s' if writers > 1 else ''} + sync + client", c.url(c.clients[0]),
                     c.url(c.sync), [p.proc.pid for p in c.procs.values()], postmaster)
    finally:
        c.stop()


async def throughput(layout: Layout, users: list[Client], rooms: list[str], per_sender: int) -> dict:
    latencies: list[float] = []

    async def sender(c: Client, room_id: str) -> None:
        for i in range(per_sender):
            t0 = time.perf_counter()
            await send(c, room_id, f"throughput {i}")
            latencies.append(time.perf_counter() - t0)

    cpu0, t0 = layout.cpu(), time.perf_counter()
    await asyncio.gather(*(sender(c, r) for c, r in zip(users, rooms)))
    wall, cpu = time.perf_counter() - t0, layout.cpu() - cpu0
    n = per_sender * len(users)
    return {"messages": n, "msgs_per_s": n / wall, "send_p50_ms": 1000 * pct(latencies, 50),
            "send_p99_ms": 1000 * pct(latencies, 99), "cpu_ms_per_msg": 1000 * cpu / n}


async def run_layout(layout: Layout, args) -> dict:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        users = [await register(session, layout.entry, f"s{i}x{int(time.time())}") for i in range(args.senders)]
        rooms = [await make_room(u, [], f"room {i}") for i, u in enumerate(users)]
        result = {"layout": layout.name,
                  "throughput": await throughput(layout, users, rooms, args.messages)}
        members = [await register(session, layout.entry, f"f{i}x{int(time.time())}") for i in range(args.syncers)]
        room = await make_room(users[0], members, "fan-out")
        syncers = Syncers([Client(session, layout.sync_url, m.user_id, m.token) for m in members], room)
        await syncers.start()
        try:
            # fanout()'s own CPU figure (one process) is left out: the layout's is above.
            result["fanout"] = await fanout(_OneProcess(layout.pids[0]), users[0], syncers,
                                            args.fanout_messages, 0.05)
        finally:
            await syncers.stop()
        return result


class _OneProcess:
    def __init__(self, pid: int) -> None:
        self.server_pid, self.postmaster_pid = pid, None


def table(results: list[dict]) -> str:
    lines = ["| layout | msgs/s | send p50 ms | send p99 ms | CPU ms/msg (all processes + PG) |"
             " fan-out p50 ms | fan-out p99 ms | deliveries |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        t, f = r["throughput"], r["fanout"]
        lines.append(f"| {r['layout']} | {t['msgs_per_s']:.0f} | {t['send_p50_ms']:.1f} | {t['send_p99_ms']:.1f} |"
                     f" {t['cpu_ms_per_msg']:.2f} | {f['p50_ms']:.1f} | {f['p99_ms']:.1f} |"
                     f" {f['deliveries']}/{f['expected_deliveries']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--writers", type=int, nargs="*", default=[1, 2, 4])
    p.add_argument("--no-single", action="store_true", help="skip the single-process run")
    p.add_argument("--senders", type=int, default=16)
    p.add_argument("--messages", type=int, default=40, help="per sender")
    p.add_argument("--syncers", type=int, default=20)
    p.add_argument("--fanout-messages", type=int, default=30)
    p.add_argument("--json")
    p.add_argument("--markdown")
    args = p.parse_args()
    results = []
    layouts = ([] if args.no_single else [single]) + [lambda n=n: cluster(n) for n in args.writers]
    for make in layouts:
        with make() as layout:
            results.append(asyncio.run(run_layout(layout, args)))
            print(table(results[-1:]), flush=True)
    report(results, table(results), args.json, args.markdown,
           heading=f"Scale-out ({command_line('bench.scaleout_bench')})")


if __name__ == "__main__":
    main()
