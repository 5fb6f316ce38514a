"""Federation benchmark (not a test): how long a message takes to reach a user on another
server, for a Synapse peer and for another instance of this server, and how much CPU this
server spends per PDU it receives (from either kind of peer).

    python -m bench.federation_bench [--messages 200] [--inbound 500]

It starts three servers on loopback with the tests' harness (two of ours, one Synapse
from the cached virtualenv, see tests/federation/synapse_harness.py), makes a room on
ours with a user of each peer in it, and:
  * sends --messages messages one at a time from our user; each peer's user long-polls
    /sync, and the delay from the send's 200 to the message showing up in that sync is
    recorded (p50 / p90 / p99 / max);
  * has each peer's user send --inbound messages (a few at a time), and reads the CPU
    time of our process and of its PostgreSQL (from /proc) before and after, until all
    have arrived: CPU per inbound PDU.
Prints a Markdown table."""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

from bench.procstats import cpu_seconds, postgres_cpu_seconds
from tests.federation.harness import V3, FederatedServer, bodies, user, wait_for
from tests.federation.synapse_harness import SynapseServer


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] if ordered else float("nan")


class Arrivals:
    """Long-polls /sync for one user and notes when each message body first shows up."""

    def __init__(self, client, room_id: str) -> None:
        self.client, self.room_id = client, room_id
        self.seen: dict[str, float] = {}
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        status, body = self.client.request("GET", f"{V3}/sync?timeout=0")
        self.since = body["next_batch"]
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            status, body = self.client.request("GET", f"{V3}/sync?timeout=5000&since={self.since}")
            now = time.monotonic()
            if status != 200:
                continue
            self.since = body["next_batch"]
            room = body.get("rooms", {}).get("join", {}).get(self.room_id, {})
            for e in room.get("timeline", {}).get("events", []):
                text = e.get("content", {}).get("body")
                if isinstance(text, str):
                    self.seen.setdefault(text, now)

    def stop(self) -> None:
        self._stop = True


def send(client, room_id: str, text: str) -> None:
    status, body = client.request("PUT", f"{V3}/rooms/{room_id}/send/m.room.message/{uuid.uuid4().hex}",
                                  {"msgtype": "m.text", "body": text})
    assert status == 200, body


def latency(sender, room_id: str, peers: dict[str, object], n: int) -> dict[str, list[float]]:
    watchers = {name: Arrivals(client, room_id) for name, client in peers.items()}
    for w in watchers.values():
        w.start()
    sent_at: dict[str, float] = {}
    for i in range(n):
        text = f"latency {i} {uuid.uuid4().hex[:6]}"
        send(sender, room_id, text)
        sent_at[text] = time.monotonic()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(text in w.seen for w in watchers.values()):
            time.sleep(0.001)
    for w in watchers.values():
        w.stop()
    return {name: [(w.seen[t] - sent_at[t]) * 1000 for t in sent_at if t in w.seen]
            for name, w in watchers.items()}


def inbound_cpu(ours: FederatedServer, receiver, room_id: str, sender, n: int) -> float:
    """CPU ms (our process + its PostgreSQL) per PDU received from `sender`'s server; the
    arrivals are watched with one long-polling /sync, as a client would."""
    watcher = Arrivals(receiver, room_id)
    watcher.start()
    pid = ours.proc.pid
    postmaster = int((ours.data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
    tag = uuid.uuid4().hex[:6]
    before = cpu_seconds(pid) + postgres_cpu_seconds(postmaster)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: send(sender, room_id, f"inbound {tag} {i}"), range(n)))
    wait_for(lambda: sum(1 for b in list(watcher.seen) if b.startswith(f"inbound {tag}")) >= n,
             timeout=600, interval=0.2, what="every inbound message")
    after = cpu_seconds(pid) + postgres_cpu_seconds(postmaster)
    watcher.stop()
    return (after - before) * 1000 / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--inbound", type=int, default=500)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="federation-bench-"))
    ours, peer = FederatedServer(work / "ours"), FederatedServer(work / "peer")
    synapse = SynapseServer(work / "synapse")
    for s in (ours, peer, synapse):
        s.start()
    try:
        alice, bob, sam = user(ours, "alice"), user(peer, "bob"), user(synapse, "sam")
        status, room = alice.request("POST", f"{V3}/createRoom", {"preset": "public_chat"})
        room_id = room["room_id"]
        for client in (bob, sam):
            status, body = client.request("POST", f"{V3}/join/{quote(room_id)}?server_name={quote(ours.server_name)}", {})
            assert status == 200, body
        send(alice, room_id, "warm-up")
        wait_for(lambda: "warm-up" in bodies(bob, room_id) and "warm-up" in bodies(sam, room_id), what="warm-up")
        lat = latency(alice, room_id, {"a Synapse peer": sam, "a peer of ours": bob}, args.messages)
        cpu = {"from Synapse": inbound_cpu(ours, alice, room_id, sam, args.inbound),
               "from a peer of ours": inbound_cpu(ours, alice, room_id, bob, args.inbound)}
    finally:
        for s in (synapse, peer, ours):
            s.stop()
        for s in (peer, ours):
            s.stop_postgres()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n### Federation ({args.messages} messages, {args.inbound} inbound PDUs per peer)\n")
    print("| delivery latency, ms | p50 | p90 | p99 | max | delivered |")
    print("|---|---|---|---|---|---|")
    for name, values in lat.items():
        print(f"| to a user on {name} | {pct(values, 50):.1f} | {pct(values, 90):.1f} | {pct(values, 99):.1f}"
              f" | {max(values):.1f} | {len(values)}/{args.messages} |")
    print("\n| our CPU per inbound PDU (process + PostgreSQL) | ms |")
    print("|---|---|")
    for name, value in cpu.items():
        print(f"| {name} | {value:.2f} |")
    print("\n" + json.dumps({"latency_ms": {k: {"p50": pct(v, 50), "p99": pct(v, 99)} for k, v in lat.items()},
                             "cpu_ms_per_inbound_pdu": cpu}))


if __name__ == "__main__":
    main()
