"""End to end with matrix-js-sdk: the SDK logs in with a password, runs its own default
start-up and sync loop against the real server, and must see a message, a typing
notification and a read receipt from another user.

The npm side lives in tests/js (package.json + package-lock.json); its dependencies,
including a Node 22 binary (the `node` npm package; current matrix-js-sdk needs Node 22),
are installed on first use. Every request the SDK makes is logged by a wrapped `fetchFn`,
and each one that got a 404 must be one where the spec allows a 404."""
from __future__ import annotations

import fcntl
import hashlib
import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.server_harness import Http

JS_DIR = Path(__file__).resolve().parent / "js"
NODE = JS_DIR / "node_modules" / "node" / "bin" / "node"
SCRIPT = JS_DIR / "sync_check.mjs"
THREADS_SCRIPT = JS_DIR / "threads_check.mjs"
STAMP = JS_DIR / "node_modules" / ".install-stamp"

# (method, path regex) of requests where the spec (or the server's freedom not to offer an
# optional or unstable endpoint) makes a 404 a correct answer.
ALLOWED_404 = [
    # No key backup exists: GET /room_keys/version answers 404 M_NOT_FOUND.
    ("GET", r"/_matrix/client/(v3|r0)/room_keys/version"),
    # Account data of a type never set: 404 M_NOT_FOUND.
    ("GET", r"/_matrix/client/(v3|r0)/user/[^/]+/account_data/[^/]+"),
    ("GET", r"/_matrix/client/(v3|r0)/user/[^/]+/rooms/[^/]+/account_data/[^/]+"),
    # A state event that does not exist / a profile field never set.
    ("GET", r"/_matrix/client/(v3|r0)/rooms/[^/]+/state/[^/]+(/[^/]*)?"),
    ("GET", r"/_matrix/client/(v3|r0)/profile/[^/]+/[^/]+"),
    # .well-known is optional.
    ("GET", r"/\.well-known/matrix/client"),
    # Unstable (MSC) probes: a server need not implement them (404 M_UNRECOGNIZED).
    ("GET", r"/_matrix/client/unstable/.*"),
    ("POST", r"/_matrix/client/unstable/.*"),
]


def _allowed_404(method: str, path: str) -> bool:
    return any(m == method and re.fullmatch(rx, path) for m, rx in ALLOWED_404)


def _lock_digest() -> str:
    h = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        h.update((JS_DIR / name).read_bytes())
    return h.hexdigest()


def _ensure_npm_deps() -> Path:
    """`npm install` in tests/js unless node_modules already matches package(-lock).json.
    A lock file keeps concurrent pytest runs from installing on top of each other."""
    npm = shutil.which("npm")
    if npm is None and not NODE.exists():
        pytest.skip("npm is not installed")
    (JS_DIR / "node_modules").mkdir(exist_ok=True)
    with open(JS_DIR / "node_modules" / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        digest = _lock_digest()
        up_to_date = NODE.exists() and STAMP.exists() and STAMP.read_text() == digest
        if not up_to_date:
            if npm is None:
                pytest.skip("npm is not installed and tests/js/node_modules is stale")
            proc = subprocess.run([npm, "install", "--no-audit", "--no-fund"], cwd=JS_DIR,
                                  capture_output=True, text=True, timeout=600)
            assert proc.returncode == 0, f"npm install failed:\n{proc.stdout}\n{proc.stderr}"
            assert NODE.exists(), f"the node package did not install {NODE}:\n{proc.stderr}"
            STAMP.write_text(digest)
    version = subprocess.run([str(NODE), "--version"], capture_output=True, text=True).stdout.strip()
    assert version.startswith("v22."), f"{NODE} is {version!r}, want Node 22"
    return NODE


class _Script:
    """The node process; stdout lines are collected by a thread so READY can be awaited."""

    def __init__(self, node: Path, config: dict, stderr_path: Path, script: Path = SCRIPT) -> None:
        self.stderr_file = open(stderr_path, "w")
        self.stderr_path = stderr_path
        self.proc = subprocess.Popen([str(node), str(script), json.dumps(config)], cwd=JS_DIR,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr_file, text=True)
        self.lines: list[str] = []
        self.eof = False
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def wait_line(self, prefix: str, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines:
                    if line.startswith(prefix):
                        return line[len(prefix):].strip()
                left = deadline - time.monotonic()
                if left <= 0 or self.eof:
                    return None
                self.cond.wait(min(left, 0.5))

    def command(self, cmd: dict) -> None:
        """One JSON line on the script's stdin (scripts that take commands)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def stderr(self) -> str:
        self.stderr_file.flush()
        return self.stderr_path.read_text()[-8000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.stderr_file.close()


def _setup_room(http: Http, unique) -> dict:
    name_a, name_b = unique("jsa"), unique("jsb")
    a = http.register(name_a)
    b = http.register(name_b)
    ha, hb = Http(http.base_url, a["access_token"]), Http(http.base_url, b["access_token"])
    status, body = ha.request("POST", "/_matrix/client/v3/createRoom",
                              {"name": "js-sdk e2e", "invite": [b["user_id"]]})
    assert status == 200, body
    room_id = body["room_id"]
    status, body = hb.request("POST", f"/_matrix/client/v3/rooms/{room_id}/join", {})
    assert status == 200, body
    status, body = ha.request("PUT", f"/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t0",
                              {"msgtype": "m.text", "body": "hello from A"})
    assert status == 200, body
    return {"name_a": name_a, "a": a, "b": b, "hb": hb, "room_id": room_id,
            "a_event": body["event_id"]}


def _run(server, http, unique, tmp_path, crypto: bool) -> dict:
    node = _ensure_npm_deps()
    setup = _setup_room(http, unique)
    room_id, hb, b_id = setup["room_id"], setup["hb"], setup["b"]["user_id"]
    body = f"hello from B {unique('m')}"
    config = {"baseUrl": server.base_url, "user": setup["name_a"], "password": "secret-pw",
              "roomId": room_id, "peer": b_id, "receiptEventId": setup["a_event"],
              "messageBody": body, "crypto": crypto, "timeoutMs": 30_000}
    log_path = server.data_dir / "server.log"
    log_start = log_path.stat().st_size

    script = _Script(node, config, tmp_path / "sync_check.stderr")
    try:
        ready = script.wait_line("READY", timeout=60)
        assert ready is not None, (f"the SDK never reached PREPARED:\n{script.lines}\n"
                                   f"{script.stderr()}")
        # B reads A's message, starts typing, then sends a message.
        rid = room_id
        status, resp = hb.request("POST", f"/_matrix/client/v3/rooms/{rid}/receipt/m.read/"
                                  f"{setup['a_event']}", {})
        assert status == 200, resp
        status, resp = hb.request("PUT", f"/_matrix/client/v3/rooms/{rid}/typing/{b_id}",
                                  {"typing": True, "timeout": 30_000})
        assert status == 200, resp
        status, resp = hb.request("PUT", f"/_matrix/client/v3/rooms/{rid}/send/m.room.message/t1",
                                  {"msgtype": "m.text", "body": body})
        assert status == 200, resp
        sent_id = resp["event_id"]

        result = _result(script)
    finally:
        script.close()

    assert result["events"]["message"]["eventId"] == sent_id
    assert result["events"]["receipt"]["eventId"] == setup["a_event"]
    assert result["events"]["typing"]["typing"] is True
    assert sorted(result["room"]["joinedMembers"]) == sorted([setup["a"]["user_id"], b_id])

    _assert_clean(result, log_path, log_start)
    # Keep the request list visible in -s output: start-up (up to PREPARED), then the rest.
    n_startup = len(result["startupRequests"])
    print(f"\njs-sdk requests (crypto={crypto}); the first {n_startup} are the start-up:")
    for i, r in enumerate(result["requests"]):
        print(f"  {'S' if i < n_startup else ' '} {r['method']} {r['path']} -> {r['status']}"
              f" {r.get('errcode') or ''}")
    return result


def _result(script: _Script, timeout: float = 60) -> dict:
    """The script's RESULT, which must report success."""
    result_line = script.wait_line("RESULT", timeout=timeout)
    assert result_line is not None, f"no RESULT from the script:\n{script.lines}\n{script.stderr()}"
    script.proc.wait(30)
    result = json.loads(result_line)
    assert script.proc.returncode == 0 and result["ok"], (
        f"script failed (exit {script.proc.returncode}): {result.get('error')}\n"
        f"events seen: {result.get('events')}\nrequests: "
        + "\n".join(f"  {r['method']} {r['path']} -> {r['status']} {r.get('errcode') or ''}"
                    for r in result["requests"])
        + f"\nstderr tail:\n{script.stderr()}")
    return result


def _assert_clean(result: dict, log_path: Path, log_start: int) -> None:
    """No request failed (but for the 404s the spec allows) and the server logged no error."""
    requests = result["requests"]
    bad_404 = [r for r in requests if r["status"] == 404 and not _allowed_404(r["method"], r["path"])]
    assert not bad_404, f"404s the spec does not allow: {bad_404}"
    # Nothing else may fail either: no 5xx, no network errors, no other 4xx. A long-poll the
    # SDK aborts itself when the script stops a client is not a failure.
    failed = [r for r in requests if r["status"] != 404 and not (isinstance(r["status"], int)
                                                                  and r["status"] < 400)
              and not (r["status"] == "network-error" and "AbortError" in r.get("error", ""))]
    assert not failed, f"failed requests: {failed}"

    log = log_path.read_bytes()[log_start:].decode("utf-8", "replace")
    bad_lines = [ln for ln in log.splitlines() if "ERROR" in ln or "unhandled error" in ln.lower()]
    assert not bad_lines, "server log has errors:\n" + "\n".join(bad_lines[:20])


def test_js_sdk_sync_loop(server, http, unique, tmp_path):
    result = _run(server, http, unique, tmp_path, crypto=False)
    # The SDK's start-up reached the sync loop with a filter and a first /sync.
    paths = [(r["method"], r["path"]) for r in result["startupRequests"]]
    assert ("POST", "/_matrix/client/v3/login") in paths
    assert any(p.endswith("/sync") for _, p in paths)


def test_js_sdk_sync_loop_with_rust_crypto(server, http, unique, tmp_path):
    """The same with the SDK's Rust crypto started (in-memory store): device keys upload,
    key queries and the key-backup probe are part of the start-up."""
    result = _run(server, http, unique, tmp_path, crypto=True)
    paths = [(r["method"], r["path"]) for r in result["requests"]]
    assert ("POST", "/_matrix/client/v3/keys/upload") in paths
    assert ("POST", "/_matrix/client/v3/keys/query") in paths
    assert result["crypto"]["ownDeviceKeys"]["ed25519"]
    assert result["crypto"]["ownCrossSigning"] is False  # nobody bootstrapped cross-signing


def test_js_sdk_threads_edits_and_reactions(server, http, unique, tmp_path):
    """The SDK with its own thread support on (threadSupport, as Element runs it) sees a
    thread, an edit and a reaction arrive live, takes part in the thread itself, and a
    second client of the same user rebuilds all of it from its initial sync's bundled
    aggregations, /threads and /relations: with no unhandled rejection and no failed
    request (before relations were served, the SDK's /relations call got a 404 and the
    rejection escaped)."""
    node = _ensure_npm_deps()
    setup = _setup_room(http, unique)
    room_id, hb = setup["room_id"], setup["hb"]
    config = {"baseUrl": server.base_url, "user": setup["name_a"], "password": "secret-pw",
              "roomId": room_id, "peer": setup["b"]["user_id"], "timeoutMs": 30_000}
    log_path = server.data_dir / "server.log"
    log_start = log_path.stat().st_size
    script = _Script(node, config, tmp_path / "threads_check.stderr", THREADS_SCRIPT)
    try:
        assert script.wait_line("READY", timeout=60) is not None, (
            f"the SDK never reached PREPARED:\n{script.lines}\n{script.stderr()}")
        send = f"/_matrix/client/v3/rooms/{room_id}/send"

        def peer_sends(event_type: str, txn: str, content: dict) -> str:
            status, resp = hb.request("PUT", f"{send}/{event_type}/{txn}", content)
            assert status == 200, resp
            return resp["event_id"]

        root = peer_sends("m.room.message", "r1", {"msgtype": "m.text", "body": "root"})
        reply = peer_sends("m.room.message", "r2", {
            "msgtype": "m.text", "body": "reply from B",
            "m.relates_to": {"rel_type": "m.thread", "event_id": root}})
        edit = peer_sends("m.room.message", "r3", {
            "msgtype": "m.text", "body": "* edited root",
            "m.new_content": {"msgtype": "m.text", "body": "edited root"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": root}})
        peer_sends("m.reaction", "r4", {"m.relates_to": {"rel_type": "m.annotation",
                                                         "event_id": root, "key": "👍"}})
        result = _result(script, timeout=120)
    finally:
        script.close()

    one, two = result["phaseOne"], result["phaseTwo"]
    assert (one["rootId"], one["peerReplyId"]) == (root, reply)
    assert result["events"]["edit"]["editId"] == edit
    assert root in one["threads"] and root in result["events"]["newThreads"]
    assert result["events"]["ownReplyInThread"]["body"] == "reply from A, edited"
    # The second client's view comes from the server's aggregations alone.
    assert two["bundledThread"] == {"count": 2, "latest": one["myReplyId"], "participated": True}
    assert (two["rootBody"], two["rootReplacedBy"]) == ("edited root", edit)
    assert root in two["threadListAll"] and root in two["threadListParticipated"]
    timeline = two["threadTimeline"]  # [event id, type, rel_type], paged in through /relations
    assert [eid for eid, _, rel in timeline if rel in (None, "m.thread")] == [root, reply, one["myReplyId"]]
    assert {(t, rel) for _, t, rel in timeline} >= {("m.reaction", "m.annotation"),
                                                    ("m.room.message", "m.replace")}
    assert two["reactionsOnRoot"] == [["👍", 1]]
    requests = result["requests"]
    assert any(r["path"].startswith(f"/_matrix/client/v1/rooms/{room_id}/relations/") for r in requests)
    assert any(r["path"] == f"/_matrix/client/v1/rooms/{room_id}/threads" for r in requests)
    _assert_clean(result, log_path, log_start)
