"""Long-polls at scale, over the client-server API only (so it can also measure Synapse).

    python -m bench.longpoll_bench --ours --users 10000 --fanout-members 1000
    python -m bench.longpoll_bench --base-url URL [--as-token TOKEN] [--server-pid PID --postmaster-pid PID]

Two scenarios:

- **wake**: `--users` users, each with one idle `/sync` long-poll, all members of one room.
  One message is sent to the room; we measure the sender's acknowledgement (the `PUT
  /send` round trip), the delivery latency of every long-poll (from the start of the send
  to the last byte of its response), and the server's CPU while it answers them. Repeated
  `--wake-rounds` times (every long-poll re-armed with its new `next_batch` in between).
- **fan-out**: the first `--fanout-members` of those users long-poll in a loop (each
  response's `next_batch` feeds the next request, as a client does) in a second room, where
  one user sends `--fanout-messages` messages `--fanout-gap` seconds apart; we measure each
  delivery's latency and the server's CPU per delivery (everything the server did in the
  window, re-polls included, divided by the deliveries).

Users are registered by an application service when the target has one (ours: the bench
writes a registration; `--as-token` for another server), else with `POST /register` (as on
the anchor's Synapse, `--synapse`). The results are keyed by server (ours, the URL, synapse).
Syncs use `set_presence=offline` so that thousands of users coming online do not turn the
setup into a presence storm (every presence change wakes everyone sharing a room), and a
stored filter (its id in the query, as Element does) without presence and account data;
the long-polls lazy-load members, as Element does.

The client is built for 10,000 concurrent HTTP/1.1 connections from one Python process:
plain asyncio protocols with keep-alive, no JSON decoding on the hot path (a response is
searched for the event id and its `next_batch`), and a raised file-descriptor limit (the
server we start inherits it). The load tool shares the machine's cores with the server, so
latencies include its own scheduling: read the CPU figures beside them."""
from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import signal
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench.common import Target, add_target_args, command_line, each_target, report
from bench.matrix_bench import pct
from bench.procstats import CpuMeter, rss_mib

# The token-only sync: no rooms, so it is cheap even for a member of a huge room.
NO_ROOMS_FILTER = json.dumps({"room": {"rooms": []}, "presence": {"not_types": ["*"]},
                              "account_data": {"not_types": ["*"]}}, separators=(",", ":"))
LONG_POLL_FILTER = json.dumps({"room": {"timeline": {"limit": 10}, "state": {"lazy_load_members": True}},
                               "presence": {"not_types": ["*"]}, "account_data": {"not_types": ["*"]}},
                              separators=(",", ":"))
NEXT_BATCH = re.compile(rb'"next_batch":"([^"]+)"')
FANOUT_BODY = re.compile(rb'"body":"fanout (\d+)"')


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def parse_response(buf: bytearray) -> tuple[int, int, bytes] | None:
    """(bytes consumed, status, body) of the complete HTTP/1.1 response at the start of
    `buf`, or None while it is incomplete. Bodies come with a Content-Length (ours) or
    chunked (Synapse; no trailers)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = bytes(buf[:end]).decode("latin-1")
    status = int(head.split(" ", 2)[1])
    pos = end + 4
    if not re.search(r"(?im)^transfer-encoding:\s*chunked", head):
        m = re.search(r"(?im)^content-length:\s*(\d+)", head)
        length = int(m.group(1)) if m else 0
        return (pos + length, status, bytes(buf[pos:pos + length])) if len(buf) >= pos + length else None
    chunks = []
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            return None
        size = int(bytes(buf[pos:line_end]).split(b";", 1)[0], 16)
        start = line_end + 2
        if len(buf) < start + size + 2:
            return None
        if size == 0:
            return start + 2, status, b"".join(chunks)
        chunks.append(bytes(buf[start:start + size]))
        pos = start + size + 2


class HttpConn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one request at a time. The response's arrival
    time is taken when its last byte is read, before anything else is done with it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is None or self.waiter.done():
            return
        parsed = parse_response(self.buf)
        if parsed is None:
            return
        now = time.perf_counter()
        consumed, status, body = parsed
        del self.buf[:consumed]
        self.waiter.set_result((now, status, body))

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))

    def request(self, method: str, target: str, host: str, token: str | None,
                body: bytes | None = None) -> asyncio.Future:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
        if token:
            lines.append(f"Authorization: Bearer {token}")
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")
        self.waiter = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(raw)
        return self.waiter


class Api:
    """A small pool of keep-alive connections for setup calls, and fresh ones for polls."""

    def __init__(self, base_url: str) -> None:
        m = re.match(r"http://([^:/]+):(\d+)", base_url)
        assert m, base_url
        self.host, self.port = m.group(1), int(m.group(2))
        self.hostport = f"{self.host}:{self.port}"
        self._pool: list[HttpConn] = []
        self._connect_gate = asyncio.Semaphore(200)  # the server's listen backlog is small

    async def connect(self) -> HttpConn:
        async with self._connect_gate:
            _, proto = await asyncio.get_running_loop().create_connection(HttpConn, self.host, self.port)
        return proto

    async def call(self, method: str, path: str, token: str | None = None, body: Any = None,
                   timeout: float = 600) -> tuple[int, Any]:
        while self._pool and self._pool[-1].closed:  # closed while idle in the pool
            self._pool.pop()
        conn = self._pool.pop() if self._pool else await self.connect()
        try:
            raw = json.dumps(body).encode() if body is not None else None
            _, status, data = await asyncio.wait_for(conn.request(method, path, self.hostport, token, raw), timeout)
        except BaseException:
            conn.transport.close()
            raise
        self._pool.append(conn)
        return status, json.loads(data) if data else None

    async def ok(self, method: str, path: str, token: str | None = None, body: Any = None) -> Any:
        status, data = await self.call(method, path, token, body)
        if status != 200:
            raise RuntimeError(f"{method} {path} -> {status} {data}")
        return data


def sync_path(since: str | None, timeout_ms: int, filt: str) -> str:
    path = f"/_matrix/client/v3/sync?timeout={timeout_ms}&set_presence=offline&filter={quote(filt)}"
    return path + (f"&since={quote(since)}" if since else "")


async def gather_limited(n: int, coros) -> list:
    gate = asyncio.Semaphore(n)

    async def one(c):
        async with gate:
            return await c
    return await asyncio.gather(*(one(c) for c in coros))


async def register_users(api: Api, prefix: str, count: int, as_token: str | None) -> list[tuple[str, str, str]]:
    """(user id, access token, id of the user's stored long-poll filter) for each user."""
    async def one(i: int) -> tuple[str, str, str]:
        name = f"{prefix}{i}"
        if as_token:
            body = {"type": "m.login.application_service", "username": name}
            data = await api.ok("POST", "/_matrix/client/v3/register", as_token, body)
        else:
            body = {"username": name, "password": "bench-pw-" + name, "auth": {"type": "m.login.dummy"}}
            status, data = await api.call("POST", "/_matrix/client/v3/register", None, body)
            if status == 401 and "session" in data:
                body["auth"]["session"] = data["session"]
                data = await api.ok("POST", "/_matrix/client/v3/register", None, body)
        user_id, token = data["user_id"], data["access_token"]
        stored = await api.ok("POST", f"/_matrix/client/v3/user/{quote(user_id)}/filter", token,
                              json.loads(LONG_POLL_FILTER))
        return user_id, token, stored["filter_id"]
    return await gather_limited(20, (one(i) for i in range(count)))


async def make_room(api: Api, owner_token: str, members: list[tuple[str, str, str]], name: str) -> str:
    room_id = (await api.ok("POST", "/_matrix/client/v3/createRoom", owner_token,
                            {"name": name, "preset": "public_chat"}))["room_id"]
    await gather_limited(20, (api.ok("POST", f"/_matrix/client/v3/rooms/{quote(room_id)}/join", tok, {})
                              for _, tok, _ in members))
    return room_id


async def current_token(api: Api, token: str) -> str:
    return (await api.ok("GET", sync_path(None, 0, NO_ROOMS_FILTER), token))["next_batch"]


async def send(api: Api, token: str, room_id: str, body: str) -> str:
    path = f"/_matrix/client/v3/rooms/{quote(room_id)}/send/m.room.message/{uuid.uuid4().hex}"
    try:
        return (await api.ok("PUT", path, token, {"msgtype": "m.text", "body": body}))["event_id"]
    except ConnectionError:  # a pooled connection closed under us: same txn id, nothing sent twice
        return (await api.ok("PUT", path, token, {"msgtype": "m.text", "body": body}))["event_id"]


# ---- wake: N idle long-polls, one message ---------------------------------------------

async def wake_round(api: Api, meter: CpuMeter, sender_token: str, room_id: str,
                     polls: list[tuple[HttpConn, str, str, str]], settle_s: float,
                     wait_s: float) -> tuple[dict, list[str]]:
    """`polls`: (connection, access token, filter id, since). Returns the round's figures
    and each poll's next token."""
    waiters = [conn.request("GET", sync_path(since, 120_000, filter_id), api.hostport, tok)
               for conn, tok, filter_id, since in polls]
    await asyncio.sleep(settle_s)  # every request parsed and parked on the server
    early = sum(1 for w in waiters if w.done())
    meter.start()
    t0 = time.perf_counter()
    event_id = await send(api, sender_token, room_id, "wake")
    ack = time.perf_counter() - t0
    done, pending = await asyncio.wait(waiters, timeout=wait_s)
    server_cpu, pg_cpu = meter.stop()
    latencies, tokens, missing = [], [], 0
    for w, (_, _, _, since) in zip(waiters, polls):
        if w in pending or w.exception() is not None:
            tokens.append(since)
            missing += 1
            continue
        arrived, status, body = w.result()
        m = NEXT_BATCH.search(body)
        tokens.append(m.group(1).decode() if m else since)
        if status == 200 and event_id.encode() in body:
            latencies.append(arrived - t0)
        else:
            missing += 1
    for w in pending:
        w.cancel()
    n = len(polls)
    return {"long_polls": n, "finished_before_send": early, "delivered": len(latencies), "missing": missing,
            "unanswered": len(pending),
            "send_ack_ms": 1000 * ack, "p50_ms": 1000 * pct(latencies, 50),
            "p99_ms": 1000 * pct(latencies, 99), "max_ms": 1000 * max(latencies, default=float("nan")),
            "server_cpu_ms": 1000 * server_cpu, "server_cpu_ms_per_delivery": 1000 * server_cpu / max(1, len(latencies)),
            "pg_cpu_ms": 1000 * pg_cpu}, tokens


async def wake_scenario(api: Api, meter: CpuMeter, users: list[tuple[str, str, str]], owner_token: str,
                        rounds: int, server_pid: int | None, wait_s: float) -> dict:
    print(f"  room with {len(users)} members", file=sys.stderr)
    room_id = await make_room(api, owner_token, users, "all hands")
    print("  sync tokens", file=sys.stderr)
    tokens = await gather_limited(50, (current_token(api, tok) for _, tok, _ in users))
    print(f"  opening {len(users)} connections", file=sys.stderr)
    conns = await asyncio.gather(*(api.connect() for _ in users))
    settle = 3 + len(users) / 2000
    results = []
    for r in range(rounds):
        polls = [(c, tok, fid, since) for c, (_, tok, fid), since in zip(conns, users, tokens)]
        res, tokens = await wake_round(api, meter, owner_token, room_id, polls, settle, wait_s)
        if server_pid:
            res["server_rss_mib"] = rss_mib(server_pid)
        print(f"  round {r + 1}: {json.dumps({k: round(v, 1) for k, v in res.items()})}", file=sys.stderr)
        results.append(res)
        dead = [i for i, c in enumerate(conns) if c.closed]
        for i in dead:
            conns[i] = await api.connect()
    for c in conns:
        c.transport.close()
    summary = {k: statistics.median(r[k] for r in results) for k in results[0]}
    return {"rounds": results, "median": summary}


# ---- fan-out: M members long-polling in a loop, K messages ------------------------------

async def fanout_scenario(api: Api, meter: CpuMeter, members: list[tuple[str, str, str]], owner_token: str,
                          messages: int, gap_s: float) -> dict:
    print(f"  room with {len(members)} members", file=sys.stderr)
    room_id = await make_room(api, owner_token, members, "fan-out")
    tokens = await gather_limited(50, (current_token(api, tok) for _, tok, _ in members))
    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    errors = 0
    stop = asyncio.Event()

    async def member_loop(tok: str, filter_id: str, since: str) -> None:
        nonlocal errors
        conn = await api.connect()
        while not stop.is_set():
            fut = conn.request("GET", sync_path(since, 30_000, filter_id), api.hostport, tok)
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait([fut, stopping], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not fut.done():
                fut.cancel()  # the connection is closed below: nothing to wait for
                break
            try:
                arrived, status, body = fut.result()
            except ConnectionError:
                errors += 1
                conn = await api.connect()
                continue
            if status != 200:
                errors += 1
                await asyncio.sleep(0.1)
                continue
            m = NEXT_BATCH.search(body)
            since = m.group(1).decode() if m else since
            for hit in FANOUT_BODY.finditer(body):
                i = int(hit.group(1))
                if i in sent_at:
                    latencies.append(arrived - sent_at[i])
        conn.transport.close()

    tasks = [asyncio.ensure_future(member_loop(tok, fid, since)) for (_, tok, fid), since in zip(members, tokens)]
    await asyncio.sleep(3 + len(members) / 2000)
    meter.start()
    t_start = time.perf_counter()
    for i in range(messages):
        sent_at[i] = time.perf_counter()
        await send(api, owner_token, room_id, f"fanout {i}")
        await asyncio.sleep(gap_s)
    deadline = time.perf_counter() + 30
    while len(latencies) < messages * len(members) and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    server_cpu, pg_cpu = meter.stop()
    wall = time.perf_counter() - t_start
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    n = len(latencies)
    return {"members": len(members), "messages": messages, "gap_s": gap_s, "deliveries": n,
            "expected_deliveries": messages * len(members), "errors": errors, "wall_s": wall,
            "p50_ms": 1000 * pct(latencies, 50), "p99_ms": 1000 * pct(latencies, 99),
            "max_ms": 1000 * max(latencies, default=float("nan")),
            "server_cpu_ms_per_message": 1000 * server_cpu / messages,
            "server_cpu_ms_per_delivery": 1000 * server_cpu / max(1, n),
            "pg_cpu_ms_per_message": 1000 * pg_cpu / messages}


# ---- running ---------------------------------------------------------------------------

AS_REGISTRATION = """id: longpoll-bench
url: null
as_token: {as_token}
hs_token: {hs_token}
sender_localpart: longpoll-bench
rate_limited: false
namespaces:
  users:
    - exclusive: true
      regex: "@lp.*"
"""


async def run(target: Target, as_token: str | None, args) -> dict:
    api = Api(target.base_url)
    server_pid = target.server_pid
    meter = CpuMeter(server_pid or 0, target.postmaster_pid)
    tag = uuid.uuid4().hex[:5]
    results: dict[str, Any] = {}
    t0 = time.perf_counter()
    print(f"registering {args.users} users", file=sys.stderr)
    users = await register_users(api, f"lp{tag}x", args.users + 1, as_token)
    owner, users = users[0], users[1:]
    results["setup_register_s"] = time.perf_counter() - t0
    if args.fanout_members:
        print(f"fan-out: {args.fanout_members} members, {args.fanout_messages} messages", file=sys.stderr)
        results["fanout"] = await fanout_scenario(api, meter, users[:args.fanout_members], owner[1],
                                                  args.fanout_messages, args.fanout_gap)
        print(f"  {json.dumps(results['fanout'])}", file=sys.stderr)
    if args.wake_rounds:
        print(f"wake: {args.users} long-polls, {args.wake_rounds} rounds", file=sys.stderr)
        results["wake"] = await wake_scenario(api, meter, users, owner[1], args.wake_rounds, server_pid,
                                              args.wake_wait)
    return results


def appservice_config(as_token: str):
    """Our server's config lines for the benchmark's application service, whose
    registration file is written into the data directory."""
    def write(workdir: Path) -> str:
        reg = workdir / "longpoll-bench-as.yaml"
        reg.write_text(AS_REGISTRATION.format(as_token=as_token, hs_token=uuid.uuid4().hex))
        return f"app_service_config_files:\n  - {reg}\n"
    return write


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_target_args(p, running=True)
    p.add_argument("--as-token", help="with --base-url: an application service token to register users")
    p.add_argument("--users", type=int, default=10_000)
    p.add_argument("--wake-rounds", type=int, default=3)
    p.add_argument("--wake-wait", type=float, default=60,
                   help="seconds to wait, after the send's answer, for the long-polls' answers")
    p.add_argument("--fanout-members", type=int, default=1000)
    p.add_argument("--fanout-messages", type=int, default=30)
    p.add_argument("--fanout-gap", type=float, default=0.5)
    p.add_argument("--json", help="write the raw results here")
    args = p.parse_args()
    if not (args.ours or args.base_url or args.synapse):
        p.error("choose at least one of --ours, --base-url, --synapse")
    print(f"file descriptors: {raise_fd_limit()}", file=sys.stderr)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop our server on the way out
    # Ours gets the benchmark's application service; --base-url may name one of its own
    # (--as-token); elsewhere users are registered with POST /register.
    ours_as_token = uuid.uuid4().hex
    as_tokens = {"ours": ours_as_token, args.base_url: args.as_token}
    results: dict[str, Any] = asyncio.run(each_target(
        args, lambda target: run(target, as_tokens.get(target.name), args), "bench-lp-",
        appservice_config(ours_as_token)))
    results["command"] = command_line("bench.longpoll_bench")
    report(results, None, args.json)


if __name__ == "__main__":
    main()
