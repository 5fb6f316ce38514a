"""A server-agnostic Matrix load tool: it speaks only the client-server API, so it runs
the same scenarios against our server and against Synapse and reports both side by side.

    python -m bench.matrix_bench --ours --synapse --markdown docs/benchmarks.md

Scenarios: send throughput (concurrent senders), send-to-sync fan-out latency (50+
syncing members of one room), typing fan-out latency, idle incremental sync latency,
initial sync of a user in 50 rooms, server memory, and N idle long-polls held at once.
Figures are medians/percentiles from one run; CPU is the server's own plus its
PostgreSQL's, in milliseconds per event."""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from typing import Any

import aiohttp

from bench.common import Target, add_target_args, command_line, each_target, report
from bench.procstats import CpuMeter, rss_mib

NO_PRESENCE = json.dumps({"presence": {"not_types": ["*"]}, "account_data": {"not_types": ["*"]},
                          "room": {"timeline": {"limit": 50}}})


class Client:
    """One user's JSON requests; paths are relative to `prefix` (the v3 client API unless
    told otherwise)."""

    def __init__(self, session: aiohttp.ClientSession, base: str, user_id: str = "", token: str = "",
                 prefix: str = "/_matrix/client/v3") -> None:
        self.session, self.base, self.user_id, self.token = session, base, user_id, token
        self.prefix = prefix

    async def req(self, method: str, path: str, body: Any = None, params: dict | None = None,
                  timeout: float = 120) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.session.request(method, self.base + self.prefix + path, json=body,
                                        params=params, headers=headers,
                                        timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            return resp.status, await resp.json(content_type=None)

    async def ok(self, method: str, path: str, body: Any = None, params: dict | None = None) -> Any:
        status, data = await self.req(method, path, body, params)
        if status != 200:
            raise RuntimeError(f"{method} {path} -> {status} {data}")
        return data


async def register(session: aiohttp.ClientSession, base: str, name: str) -> Client:
    c = Client(session, base)
    body: dict[str, Any] = {"username": name, "password": "bench-pw-" + name,
                            "auth": {"type": "m.login.dummy"}}
    status, data = await c.req("POST", "/register", body)
    if status == 401 and "session" in data:  # servers that want the session echoed back
        body["auth"]["session"] = data["session"]
        status, data = await c.req("POST", "/register", body)
    if status != 200:
        raise RuntimeError(f"register {name}: {status} {data}")
    c.user_id, c.token = data["user_id"], data["access_token"]
    return c


def _non_empty(section: Any) -> bool:
    if isinstance(section, dict):
        return any(_non_empty(v) for v in section.values())
    if isinstance(section, list):
        return bool(section)
    return False


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


async def make_room(owner: Client, members: list[Client], name: str) -> str:
    room = await owner.ok("POST", "/createRoom", {"name": name, "preset": "public_chat"})
    room_id = room["room_id"]
    for i in range(0, len(members), 10):
        await asyncio.gather(*(m.ok("POST", f"/rooms/{room_id}/join", {}) for m in members[i:i + 10]))
    return room_id


_txn = 0


def txn() -> str:
    global _txn
    _txn += 1
    return f"b{_txn}-{uuid.uuid4().hex[:6]}"


async def send(c: Client, room_id: str, body: str) -> str:
    data = await c.ok("PUT", f"/rooms/{room_id}/send/m.room.message/{txn()}", {"msgtype": "m.text", "body": body})
    return data["event_id"]


# ---- scenarios ---------------------------------------------------------------------

async def send_throughput(target: Target, users: list[Client], room_id: str, total: int) -> dict:
    meter = CpuMeter(target.server_pid, target.postmaster_pid)
    per = total // len(users)
    latencies: list[float] = []

    async def sender(c: Client) -> None:
        for i in range(per):
            t0 = time.perf_counter()
            await send(c, room_id, f"throughput {i}")
            latencies.append(time.perf_counter() - t0)

    meter.start()
    t0 = time.perf_counter()
    await asyncio.gather(*(sender(c) for c in users))
    wall = time.perf_counter() - t0
    server_cpu, pg_cpu = meter.stop()
    n = per * len(users)
    return {"senders": len(users), "messages": n, "msgs_per_s": n / wall,
            "send_p50_ms": 1000 * pct(latencies, 50), "send_p99_ms": 1000 * pct(latencies, 99),
            "server_cpu_ms_per_msg": 1000 * server_cpu / n, "pg_cpu_ms_per_msg": 1000 * pg_cpu / n}


class Syncers:
    """Members of one room long-polling /sync, noting when each marked event arrives."""

    def __init__(self, clients: list[Client], room_id: str) -> None:
        self.clients, self.room_id = clients, room_id
        self.sent_at: dict[str, float] = {}
        self.message_latencies: list[float] = []
        self.typing_started: float | None = None
        self.typing_seen: list[float] = []
        self._tasks: list[asyncio.Task] = []
        self.ready = 0

    async def _loop(self, c: Client) -> None:
        _, first = await c.req("GET", "/sync", params={"filter": NO_PRESENCE, "timeout": "0"})
        since = first["next_batch"]
        self.ready += 1
        while True:
            status, data = await c.req("GET", "/sync", params={"since": since, "timeout": "30000",
                                                                "filter": NO_PRESENCE})
            now = time.perf_counter()
            if status != 200:
                await asyncio.sleep(0.1)
                continue
            since = data["next_batch"]
            room = data.get("rooms", {}).get("join", {}).get(self.room_id)
            if not room:
                continue
            for ev in room.get("timeline", {}).get("events", []):
                body = ev.get("content", {}).get("body", "")
                if body.startswith("fanout ") and body in self.sent_at:
                    self.message_latencies.append(now - self.sent_at[body])
            for ev in room.get("ephemeral", {}).get("events", []):
                if ev.get("type") == "m.typing" and ev["content"].get("user_ids") and self.typing_started:
                    self.typing_seen.append(now - self.typing_started)

    async def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self._loop(c)) for c in self.clients]
        while self.ready < len(self.clients):
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # let every long-poll settle into waiting

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def fanout(target: Target, sender: Client, syncers: Syncers, messages: int, gap_s: float) -> dict:
    meter = CpuMeter(target.server_pid, target.postmaster_pid)
    meter.start()
    for i in range(messages):
        body = f"fanout {i}"
        syncers.sent_at[body] = time.perf_counter()
        await send(sender, syncers.room_id, body)
        await asyncio.sleep(gap_s)
    await asyncio.sleep(2.0)
    server_cpu, pg_cpu = meter.stop()
    lat = syncers.message_latencies
    expected = messages * len(syncers.clients)
    return {"syncers": len(syncers.clients), "messages": messages, "deliveries": len(lat),
            "expected_deliveries": expected,
            "p50_ms": 1000 * pct(lat, 50), "p95_ms": 1000 * pct(lat, 95), "p99_ms": 1000 * pct(lat, 99),
            "server_cpu_ms_per_msg": 1000 * server_cpu / messages,
            "pg_cpu_ms_per_msg": 1000 * pg_cpu / messages}


async def typing_fanout(sender: Client, syncers: Syncers, rounds: int) -> dict:
    per_round = []
    for _ in range(rounds):
        syncers.typing_seen = []
        syncers.typing_started = time.perf_counter()
        await sender.ok("PUT", f"/rooms/{syncers.room_id}/typing/{sender.user_id}",
                        {"typing": True, "timeout": 10000})
        deadline = time.perf_counter() + 5
        while len(syncers.typing_seen) < len(syncers.clients) and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        per_round.extend(syncers.typing_seen)
        syncers.typing_started = None
        await sender.ok("PUT", f"/rooms/{syncers.room_id}/typing/{sender.user_id}", {"typing": False})
        await asyncio.sleep(0.3)
    return {"rounds": rounds, "deliveries": len(per_round), "p50_ms": 1000 * pct(per_round, 50),
            "p99_ms": 1000 * pct(per_round, 99)}


async def timed_sync(user: Client, params: dict) -> tuple[float, dict, int]:
    """Seconds until the last byte of the response arrived (the server's part; decoding
    the JSON in this client is not counted), the decoded body, and its size."""
    t0 = time.perf_counter()
    async with user.session.get(user.base + "/_matrix/client/v3/sync", params=params,
                                headers={"Authorization": f"Bearer {user.token}"}) as resp:
        raw = await resp.read()
    elapsed = time.perf_counter() - t0
    if resp.status != 200:
        raise RuntimeError(f"sync -> {resp.status} {raw[:200]!r}")
    return elapsed, json.loads(raw), len(raw)


async def idle_and_initial_sync(user: Client, repeats: int) -> dict:
    initial = []
    for _ in range(5):
        elapsed, data, size = await timed_sync(user, {"timeout": "0"})
        initial.append(elapsed)
    rooms = len(data.get("rooms", {}).get("join", {}))
    since = data["next_batch"]
    idle = []
    for _ in range(repeats):
        elapsed, data, _ = await timed_sync(user, {"since": since, "timeout": "0"})
        idle.append(elapsed)
        since = data["next_batch"]
    return {"rooms": rooms, "initial_sync_bytes": size,
            "initial_sync_median_ms": 1000 * statistics.median(initial),
            "idle_sync_median_ms": 1000 * statistics.median(idle),
            "idle_sync_p99_ms": 1000 * pct(idle, 99)}


async def many_long_polls(target: Target, users: list[Client], total: int) -> dict:
    """Hold `total` idle long-polls open at once; probe the server while they wait."""
    tokens = {}
    for u in users:
        tokens[u.user_id] = (await u.ok("GET", "/sync", params={"timeout": "0", "filter": NO_PRESENCE}))["next_batch"]
    rss_before = rss_mib(target.server_pid)
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as s:
        async def poll(u: Client) -> int:
            try:
                async with s.get(target.base_url + "/_matrix/client/v3/sync",
                                 params={"since": tokens[u.user_id], "timeout": "60000", "filter": NO_PRESENCE},
                                 headers={"Authorization": f"Bearer {u.token}"},
                                 timeout=aiohttp.ClientTimeout(total=120)) as r:
                    body = await r.read()
                    if r.status == 200:
                        # Why did an idle long-poll come back early? Note what it carried.
                        data = json.loads(body)
                        reasons.update(k for k in ("rooms", "presence", "account_data", "to_device", "device_lists")
                                       if _non_empty(data.get(k)))
                    return r.status
            except (aiohttp.ClientError, asyncio.TimeoutError):
                return -1

        reasons: set[str] = set()

        tasks = [asyncio.ensure_future(poll(users[i % len(users)])) for i in range(total)]
        await asyncio.sleep(min(30, 5 + total / 500))
        early = sum(1 for t in tasks if t.done())
        statuses = sorted({t.result() for t in tasks if t.done() and not t.cancelled()})
        probes = []
        probe = users[0]
        for _ in range(20):
            t0 = time.perf_counter()
            await probe.ok("GET", "/account/whoami")
            probes.append(time.perf_counter() - t0)
        rss_during = rss_mib(target.server_pid)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {"long_polls": total, "finished_early": early, "held": total - early,
            "early_statuses": statuses, "early_because_of": sorted(reasons),
            "probe_median_ms": 1000 * statistics.median(probes),
            "rss_before_mib": rss_before, "rss_during_mib": rss_during}


async def run_target(target: Target, args) -> dict:
    tag = uuid.uuid4().hex[:6]
    results: dict[str, Any] = {"target": target.name}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        print(f"[{target.name}] registering users", file=sys.stderr)
        syncer_clients = []
        for i in range(0, args.syncers, 10):
            syncer_clients += await asyncio.gather(*(register(session, target.base_url, f"s{tag}x{j}")
                                                     for j in range(i, min(i + 10, args.syncers))))
        senders = await asyncio.gather(*(register(session, target.base_url, f"w{tag}x{j}")
                                         for j in range(args.senders)))
        owner = senders[0]
        print(f"[{target.name}] send throughput", file=sys.stderr)
        room_tp = await make_room(owner, list(senders[1:]), "throughput")
        results["send_throughput"] = await send_throughput(target, list(senders), room_tp, args.messages)
        print(f"[{target.name}] fan-out", file=sys.stderr)
        room_fo = await make_room(owner, syncer_clients, "fanout")
        syncers = Syncers(syncer_clients, room_fo)
        await syncers.start()
        results["fanout"] = await fanout(target, owner, syncers, args.fanout_messages, args.fanout_gap)
        print(f"[{target.name}] typing fan-out", file=sys.stderr)
        results["typing"] = await typing_fanout(owner, syncers, 10)
        await syncers.stop()
        print(f"[{target.name}] initial and idle sync (user in {args.rooms} rooms)", file=sys.stderr)
        member = syncer_clients[0]
        for i in range(args.rooms):
            room_id = await make_room(owner, [member], f"r{i}")
            for k in range(5):
                await send(owner, room_id, f"history {k}")
        results["sync"] = await idle_and_initial_sync(member, 200)
        print(f"[{target.name}] {args.long_polls} idle long-polls", file=sys.stderr)
        results["long_polls"] = await many_long_polls(target, syncer_clients, args.long_polls)
        results["rss_mib"] = rss_mib(target.server_pid)
    return results


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"


def markdown(results: dict[str, dict], command: str) -> str:
    ours, syn = results.get("ours"), results.get("synapse")
    rows = [
        ("send throughput (msgs/s)", ("send_throughput", "msgs_per_s"), "higher"),
        ("send latency p50 (ms)", ("send_throughput", "send_p50_ms"), "lower"),
        ("server CPU per sent message (ms)", ("send_throughput", "server_cpu_ms_per_msg"), "lower"),
        ("PostgreSQL CPU per sent message (ms)", ("send_throughput", "pg_cpu_ms_per_msg"), "lower"),
        ("fan-out p50 (ms)", ("fanout", "p50_ms"), "lower"),
        ("fan-out p95 (ms)", ("fanout", "p95_ms"), "lower"),
        ("fan-out p99 (ms)", ("fanout", "p99_ms"), "lower"),
        ("server CPU per fanned-out message (ms)", ("fanout", "server_cpu_ms_per_msg"), "lower"),
        ("PostgreSQL CPU per fanned-out message (ms)", ("fanout", "pg_cpu_ms_per_msg"), "lower"),
        ("typing fan-out p50 (ms)", ("typing", "p50_ms"), "lower"),
        ("typing fan-out p99 (ms)", ("typing", "p99_ms"), "lower"),
        ("idle incremental sync median (ms)", ("sync", "idle_sync_median_ms"), "lower"),
        ("initial sync, 50 rooms, median (ms)", ("sync", "initial_sync_median_ms"), "lower"),
        ("long-polls held", ("long_polls", "held"), "higher"),
        ("request latency while they wait (ms)", ("long_polls", "probe_median_ms"), "lower"),
        ("server RSS with the long-polls (MiB)", ("long_polls", "rss_during_mib"), "lower"),
        ("server RSS at the end (MiB)", ("rss_mib",), "lower"),
    ]

    def get(r, path):
        v = r
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        return v

    lines = ["| measure | ours | synapse | ours / synapse |", "|---|---:|---:|---:|"]
    for label, path, _ in rows:
        a = get(ours, path) if ours else None
        b = get(syn, path) if syn else None
        fa = f"{a:.1f}" if isinstance(a, (int, float)) else "-"
        fb = f"{b:.1f}" if isinstance(b, (int, float)) else "-"
        r = ratio(a, b) if isinstance(a, (int, float)) and isinstance(b, (int, float)) else "-"
        lines.append(f"| {label} | {fa} | {fb} | {r} |")
    return f"Command: `{command}`\n\n" + "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_target_args(p, ours_port=18448)
    p.add_argument("--senders", type=int, default=20)
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--syncers", type=int, default=50)
    p.add_argument("--fanout-messages", type=int, default=100)
    p.add_argument("--fanout-gap", type=float, default=0.05)
    p.add_argument("--rooms", type=int, default=50)
    p.add_argument("--long-polls", type=int, default=5000)
    p.add_argument("--json", help="write the raw results here")
    p.add_argument("--markdown", help="write the comparison table here (appended under a heading)")
    args = p.parse_args()
    results = asyncio.run(each_target(args, lambda target: run_target(target, args), "bench-ours-"))
    report(results, markdown(results, command_line("bench.matrix_bench")), args.json, args.markdown)


if __name__ == "__main__":
    main()
