"""Several processes share one media directory (docs/media.md, docs/scaling.md): each
receives uploads into a temporary directory of its own, so one process starting up
clears only its own leftovers, never another's uploads in flight."""
from __future__ import annotations

import json
import socket
import time

from tests.media_client import LEGACY, SERVER_NAME, V1, get
from tests.server_harness import Http, new_user

MiB = 1024 * 1024


def _read_response(s: socket.socket) -> tuple[int, dict]:
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), None)
        if length is not None and len(body) >= length:
            break
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def test_a_process_starting_up_leaves_other_processes_uploads_alone(cluster, unique):
    """An upload half-received by the client process survives a writer's restart (which
    clears its own temporary directory, leftovers included) and lands whole."""
    client = cluster.clients[0]
    writer = cluster.writers[0]
    tmp = cluster.shared / "media" / "tmp"
    alice = new_user(cluster.url(client), unique("up"))
    content = bytes(range(256)) * (8 * 1024)  # 2 MiB
    half = len(content) // 2
    with socket.create_connection(("127.0.0.1", cluster.procs[client].port), timeout=120) as s:
        s.sendall((f"POST {LEGACY}/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice.token}\r\n"
                   f"Content-Type: application/octet-stream\r\nContent-Length: {len(content)}\r\n"
                   "Connection: close\r\n\r\n").encode() + content[:half])
        deadline = time.monotonic() + 10
        while not list(tmp.rglob("upload-*")) and time.monotonic() < deadline:
            time.sleep(0.02)
        receiving = list(tmp.rglob("upload-*"))
        assert receiving, "the first half never reached the disk"
        leftover = tmp / writer / "upload-left-by-a-crash"
        leftover.parent.mkdir(parents=True, exist_ok=True)
        leftover.write_bytes(b"half an upload")

        cluster.procs[writer].stop()
        cluster.restart(writer)

        assert not leftover.exists(), "the writer did not clear its own temporary directory"
        assert all(p.exists() for p in receiving), "the writer removed the client's upload in flight"
        s.sendall(content[half:])
        status, body = _read_response(s)
    assert status == 200, body
    media_id = body["content_uri"].rsplit("/", 1)[1]
    status, _, downloaded = get(Http(cluster.url(client), alice.token), f"{V1}/download/{SERVER_NAME}/{media_id}")
    assert status == 200 and downloaded == content
