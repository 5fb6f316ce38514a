"""Sliding sync (MSC4186), over HTTP only, so the same run can measure Synapse.

    python -m bench.sliding_sync_bench --ours --rooms 500
    python -m bench.sliding_sync_bench --base-url http://127.0.0.1:8008 --token TOKEN \\
        --peer-token TOKEN2 [--server-pid PID --postmaster-pid PID]
    python -m bench.sliding_sync_bench --ours --synapse --rooms 500

Setup: the user joins `--rooms` rooms (created by them, each named, with one message; the
peer joins the newest, to send into it). With --base-url the user and peer are the
accounts the tokens belong to (rate limits must be off on that server); without tokens,
and on ours and the anchor's Synapse (`--synapse`), both are registered. The results are
keyed by server (ours, the URL, synapse).

Measured:
- **first window**: a new connection (no `pos`, a new conn_id each time) asking, as
  Element X does, for the 20 most recent rooms (`ranges [[0, 19]]`, `timeline_limit` 1 and
  Element X's required_state) with the e2ee, to_device, account_data, receipts and typing
  extensions on. The first request after setup is reported on its own ("cold"), then the
  median and p90 of `--repeats` more.
- **idle poll**: the connection long-polls with a short timeout (`--idle-timeout-ms`) and
  nothing happens: server CPU (and PostgreSQL's) per poll.
- **woken poll**: the connection long-polls; the peer sends a message into the newest
  room; we wait for the poll's answer. CPU per round minus CPU per send alone (measured
  with no poll waiting) is the woken poll's own cost; the latency is from the send's start
  to the poll's answer."""
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

from bench.common import Target, add_target_args, each_target
from bench.matrix_bench import Client, pct, register
from bench.procstats import CpuMeter, rss_mib

SS = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync"
V3 = "/_matrix/client/v3"
# What Element X asks for its room list (matrix-rust-sdk's defaults).
ELEMENT_X_STATE = [["m.room.encryption", ""], ["m.room.member", "$LAZY"], ["m.room.member", "$ME"],
                   ["m.room.name", ""], ["m.room.topic", ""], ["m.room.avatar", ""],
                   ["m.room.canonical_alias", ""], ["m.room.power_levels", ""], ["m.room.join_rules", ""],
                   ["m.room.create", ""], ["m.room.history_visibility", ""], ["m.room.pinned_events", ""],
                   ["m.call.member", "*"], ["m.room.tombstone", ""]]
EXTENSIONS = {"e2ee": {"enabled": True}, "to_device": {"enabled": True}, "account_data": {"enabled": True},
              "receipts": {"enabled": True}, "typing": {"enabled": True}}


def window_body(conn_id: str) -> dict:
    return {"conn_id": conn_id, "lists": {"all": {"ranges": [[0, 19]], "timeline_limit": 1,
                                                  "required_state": ELEMENT_X_STATE}},
            "extensions": EXTENSIONS}


async def setup(user: Client, peer: Client, rooms: int) -> str:
    user.user_id = (await user.ok("GET", V3 + "/account/whoami"))["user_id"]
    peer.user_id = (await peer.ok("GET", V3 + "/account/whoami"))["user_id"]
    sem = asyncio.Semaphore(8)

    async def one(i: int) -> str:
        async with sem:
            # A distinct create event each: concurrent createRooms in one millisecond
            # would otherwise build the same v12 room id.
            room_id = (await user.ok("POST", V3 + "/createRoom", {
                "name": f"bench room {i}", "preset": "private_chat",
                "creation_content": {"org.example.bench_room": i}}))["room_id"]
            await user.ok("PUT", f"{V3}/rooms/{room_id}/send/m.room.message/{uuid.uuid4().hex}",
                          {"msgtype": "m.text", "body": f"hello {i}"})
            return room_id
    room_ids = await asyncio.gather(*(one(i) for i in range(rooms)))
    newest = room_ids[-1]
    await user.ok("POST", f"{V3}/rooms/{newest}/invite", {"user_id": peer.user_id})
    await peer.ok("POST", f"{V3}/rooms/{newest}/join", {})
    await user.ok("PUT", f"{V3}/rooms/{newest}/send/m.room.message/{uuid.uuid4().hex}",
                  {"msgtype": "m.text", "body": "the newest"})
    return newest


async def first_window(user: Client, repeats: int) -> dict:
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        status, body = await user.req("POST", SS, window_body(f"bench-{uuid.uuid4().hex}"))
        times.append(time.perf_counter() - t0)
        if status != 200 or len(body["rooms"]) != 20:
            raise RuntimeError(f"first window: {status} {str(body)[:300]}")
    warm = times[1:]
    return {"cold_ms": round(times[0] * 1000, 2), "median_ms": round(statistics.median(warm) * 1000, 2),
            "p90_ms": round(pct(warm, 90) * 1000, 2), "count": body["lists"]["all"]["count"],
            "response_bytes": len(json.dumps(body))}


async def idle_polls(user: Client, meter: CpuMeter | None, polls: int, timeout_ms: int) -> dict:
    body = window_body("bench-idle")
    status, resp = await user.req("POST", SS, body)
    pos = resp["pos"]
    status, resp = await user.req("POST", SS, body, params={"pos": pos, "timeout": "0"})
    pos = resp["pos"]
    if meter:
        meter.start()
    t0 = time.perf_counter()
    for _ in range(polls):
        status, resp = await user.req("POST", SS, body, params={"pos": pos, "timeout": str(timeout_ms)})
        if status != 200 or resp["rooms"]:
            raise RuntimeError(f"idle poll was not idle: {status} {str(resp)[:300]}")
        pos = resp["pos"]
    wall = time.perf_counter() - t0
    out: dict[str, Any] = {"polls": polls, "timeout_ms": timeout_ms, "wall_s": round(wall, 2)}
    if meter:
        server, pg = meter.stop()
        out["server_cpu_ms_per_poll"] = round(server / polls * 1000, 3)
        out["postgres_cpu_ms_per_poll"] = round(pg / polls * 1000, 3)
    return out


async def woken_polls(user: Client, peer: Client, room_id: str, meter: CpuMeter | None, rounds: int) -> dict:
    body = window_body("bench-woken")
    resp = (await user.req("POST", SS, body))[1]
    pos = resp["pos"]

    async def send(i: int) -> None:
        await peer.ok("PUT", f"{V3}/rooms/{room_id}/send/m.room.message/{uuid.uuid4().hex}",
                      {"msgtype": "m.text", "body": f"wake {i}"})

    # Sends alone (nobody polling this connection), for the baseline.
    if meter:
        meter.start()
    for i in range(rounds):
        await send(i)
    send_cpu = meter.stop() if meter else (0.0, 0.0)
    resp = (await user.req("POST", SS, body, params={"pos": pos, "timeout": "0"}))[1]
    pos = resp["pos"]
    latencies = []
    if meter:
        meter.start()
    for i in range(rounds):
        poll = asyncio.ensure_future(user.req("POST", SS, body, params={"pos": pos, "timeout": "30000"}))
        await asyncio.sleep(0.05)  # let the poll reach the server and wait
        t0 = time.perf_counter()
        await send(rounds + i)
        status, resp = await poll
        latencies.append(time.perf_counter() - t0)
        if status != 200 or room_id not in resp["rooms"]:
            raise RuntimeError(f"woken poll: {status} {str(resp)[:300]}")
        pos = resp["pos"]
    out: dict[str, Any] = {"rounds": rounds, "latency_median_ms": round(statistics.median(latencies) * 1000, 2),
                           "latency_p90_ms": round(pct(latencies, 90) * 1000, 2)}
    if meter:
        server, pg = meter.stop()
        out["server_cpu_ms_per_send_alone"] = round(send_cpu[0] / rounds * 1000, 3)
        out["server_cpu_ms_per_send_and_woken_poll"] = round(server / rounds * 1000, 3)
        out["server_cpu_ms_per_woken_poll"] = round((server - send_cpu[0]) / rounds * 1000, 3)
        out["postgres_cpu_ms_per_woken_poll"] = round((pg - send_cpu[1]) / rounds * 1000, 3)
    return out


async def run(target: Target, args) -> dict:
    # With --base-url the user and the peer may be accounts there (their tokens given);
    # anywhere else both are registered here.
    token, peer_token = (args.token, args.peer_token) if target.name == args.base_url else (None, None)
    meter = CpuMeter(target.server_pid, target.postmaster_pid) if target.server_pid else None
    base_url = target.base_url
    connector = aiohttp.TCPConnector(limit=32)
    async with aiohttp.ClientSession(connector=connector) as session:
        if token is None:
            reg = await register(session, base_url, f"ssbench{uuid.uuid4().hex[:8]}")
            token = reg.token
        if peer_token is None:
            peer_token = (await register(session, base_url, f"sspeer{uuid.uuid4().hex[:8]}")).token
        user = Client(session, base_url, token=token, prefix="")
        peer = Client(session, base_url, token=peer_token, prefix="")
        print(f"setting up {args.rooms} rooms", file=sys.stderr)
        t0 = time.perf_counter()
        newest = await setup(user, peer, args.rooms)
        results: dict[str, Any] = {"rooms": args.rooms, "setup_s": round(time.perf_counter() - t0, 1)}
        print("first window", file=sys.stderr)
        results["first_window"] = await first_window(user, args.repeats)
        print("idle polls", file=sys.stderr)
        results["idle_poll"] = await idle_polls(user, meter, args.idle_polls, args.idle_timeout_ms)
        print("woken polls", file=sys.stderr)
        results["woken_poll"] = await woken_polls(user, peer, newest, meter, args.wake_rounds)
        if target.server_pid:
            results["server_rss_mib"] = round(rss_mib(target.server_pid), 1)
        return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_target_args(p, running=True)
    p.add_argument("--port", dest="ours_port", type=int, help=argparse.SUPPRESS)  # --ours-port's older name
    p.add_argument("--token", help="with --base-url: the measured user's access token")
    p.add_argument("--peer-token", help="with --base-url: a second user's token (sends the wake-ups)")
    p.add_argument("--rooms", type=int, default=500)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--idle-polls", type=int, default=200)
    p.add_argument("--idle-timeout-ms", type=int, default=50)
    p.add_argument("--wake-rounds", type=int, default=100)
    args = p.parse_args()
    if not (args.ours or args.base_url or args.synapse):
        p.error("choose at least one of --ours, --base-url, --synapse")
    results = asyncio.run(each_target(args, lambda target: run(target, args), "ssbench-"))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
