"""Federation benchmark (not a test): how long a message takes to reach a user on another
server, for a Synapse peer and for another instance of this server, and how much CPU this
server spends per PDU it receives (from either kind of peer); and, for reference, the
same between two Synapses on the same machine.

    python -m bench.federation_bench [--messages 200] [--inbound 500] [--json PATH]

It starts four servers on loopback with the tests' harness (two of ours, two Synapses
from the cached virtualenv, see tests/federation/synapse_harness.py), makes a room on
ours with a user of ours, of our peer and of the first Synapse in it, and a room on the
first Synapse with a user of the second, and:
  * sends --messages messages one at a time from the room creator (ours; the first
    Synapse); each remote user long-polls /sync, and the delay from the send's 200 to the
    message showing up in that sync is recorded (p50 / p90 / p99 / max);
  * has a remote user send --inbound messages (a few at a time) to the room's creator,
    and reads the CPU time of the receiving server's process (from /proc; ours: and of
    its PostgreSQL; the harness's Synapses keep SQLite in their own process) before and
    after, until all have arrived: CPU per inbound PDU.
Prints Markdown tables."""
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

from bench.common import command_line, report
from bench.procstats import CpuMeter
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


def inbound_cpu(meter: CpuMeter, receiver, room_id: str, sender, n: int,
                quiet_s: float = 30) -> tuple[float, float, int]:
    """CPU ms (the receiving server's process, its PostgreSQL) per PDU received from
    `sender`'s server, and how many of the `n` arrived; the arrivals are watched with one
    long-polling /sync of `receiver`, as a client would. Waits until all have arrived or
    none has for `quiet_s`; the CPU is read as of the last arrival."""
    watcher = Arrivals(receiver, room_id)
    watcher.start()
    tag = f"inbound {uuid.uuid4().hex[:6]} "
    meter.start()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: send(sender, room_id, f"{tag}{i}"), range(n)))
    arrived, cpu, last_change = -1, (0.0, 0.0), time.monotonic()
    while arrived < n and time.monotonic() - last_change < quiet_s:
        count = sum(1 for b in list(watcher.seen) if b.startswith(tag))
        if count != arrived:
            arrived, cpu, last_change = count, meter.stop(), time.monotonic()
        time.sleep(0.2)
    watcher.stop()
    return cpu[0] * 1000 / max(1, arrived), cpu[1] * 1000 / max(1, arrived), arrived


def shared_room(creator, home, members: list) -> str:
    """A public room created by `creator` on its server `home`, joined by `members` (users
    of other servers), once a first message has reached every one of them."""
    status, room = creator.request("POST", f"{V3}/createRoom", {"preset": "public_chat"})
    assert status == 200, room
    room_id = room["room_id"]
    for client in members:
        status, body = client.request("POST", f"{V3}/join/{quote(room_id)}?server_name={quote(home.server_name)}", {})
        assert status == 200, body
    send(creator, room_id, "warm-up")
    wait_for(lambda: all("warm-up" in bodies(c, room_id) for c in members), what="warm-up")
    return room_id


def table(lat: dict[str, list[float]], cpu: dict[str, tuple[float, float | None, int]], args) -> str:
    rows = [f"### Federation ({args.messages} messages, {args.inbound} inbound PDUs per leg)\n",
            "| delivery latency, ms | p50 | p90 | p99 | max | delivered |", "|---|---|---|---|---|---|"]
    rows += [f"| {name} | {pct(v, 50):.1f} | {pct(v, 90):.1f} | {pct(v, 99):.1f} | {max(v, default=float('nan')):.1f}"
             f" | {len(v)}/{args.messages} |" for name, v in lat.items()]
    rows += ["", "| receiving server's CPU per inbound PDU, ms | process | PostgreSQL | total | arrived |",
             "|---|---|---|---|---|"]
    rows += [f"| {name} | {server:.2f} | {'(SQLite, in process)' if pg is None else f'{pg:.2f}'}"
             f" | {server + (pg or 0):.2f} | {arrived}/{args.inbound} |" for name, (server, pg, arrived) in cpu.items()]
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--inbound", type=int, default=500)
    parser.add_argument("--json", help="write the raw results here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="federation-bench-"))
    ours, peer = FederatedServer(work / "ours"), FederatedServer(work / "peer")
    synapse, synapse2 = SynapseServer(work / "synapse"), SynapseServer(work / "synapse2")
    for s in (ours, peer, synapse, synapse2):
        s.start()
    try:
        alice, bob, sam, sue = user(ours, "alice"), user(peer, "bob"), user(synapse, "sam"), user(synapse2, "sue")
        room_id = shared_room(alice, ours, [bob, sam])
        synapse_room = shared_room(sam, synapse, [sue])
        postmaster = int((ours.data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
        ours_meter = CpuMeter(ours.proc.pid, postmaster)
        lat = {f"ours -> {name}": v for name, v in
               latency(alice, room_id, {"Synapse": sam, "ours": bob}, args.messages).items()}
        lat.update(latency(sam, synapse_room, {"Synapse -> Synapse": sue}, args.messages))
        cpu: dict[str, tuple[float, float | None, int]] = {
            "Synapse -> ours": inbound_cpu(ours_meter, alice, room_id, sam, args.inbound),
            "ours -> ours": inbound_cpu(ours_meter, alice, room_id, bob, args.inbound)}
        server_ms, _, arrived = inbound_cpu(CpuMeter(synapse.proc.pid, None), sam, synapse_room, sue, args.inbound)
        cpu["Synapse -> Synapse"] = (server_ms, None, arrived)  # its database (SQLite) is in its process
    finally:
        for s in (synapse2, synapse, peer, ours):
            s.stop()
        for s in (peer, ours):
            s.stop_postgres()
        shutil.rmtree(work, ignore_errors=True)
    results = {"command": command_line("bench.federation_bench"),
               "latency_ms": {k: {"p50": pct(v, 50), "p90": pct(v, 90), "p99": pct(v, 99),
                                  "max": max(v, default=float("nan")), "delivered": len(v)} for k, v in lat.items()},
               "cpu_ms_per_inbound_pdu": {k: {"process": server, "postgres": pg, "arrived": arrived}
                                          for k, (server, pg, arrived) in cpu.items()}}
    report(results, table(lat, cpu, args), args.json)


if __name__ == "__main__":
    main()
