"""What every benchmark shares: the servers it measures (ours, started on a fresh data
directory and stopped afterwards; Synapse, started by the anchor script; or one already
running), their command-line options, and writing the results out."""
from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator

from homeserver.config import lifted_rate_limits_yaml

REPO = Path(__file__).resolve().parent.parent
SYNAPSE_SCRIPT = REPO.parent / "shared" / "synapse_anchor.sh"


@dataclass
class Target:
    name: str
    base_url: str
    server_pid: int | None      # for CPU and memory figures, when the server runs on this machine
    postmaster_pid: int | None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def ours(prefix: str, port: int = 0, extra_config: str | Callable[[Path], str] = "") -> Iterator[Target]:
    """Our server on a fresh data directory (port 0: a free one), rate limits lifted as in
    the anchor's Synapse; stopped and its directory removed afterwards. `extra_config`
    may be a function of the data directory (to write files the config names)."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    port = port or free_port()
    extra = extra_config(workdir) if callable(extra_config) else extra_config
    cfg = workdir / "homeserver.yaml"
    cfg.write_text(f"server_name: bench.ours\npublic_baseurl: http://127.0.0.1:{port}/\n"
                   f"data_dir: {workdir}\nlog_level: WARNING\nlisteners:\n  - port: {port}\n"
                   "registration:\n  bcrypt_rounds: 10\n" + lifted_rate_limits_yaml() + extra)
    proc = subprocess.Popen([sys.executable, "-m", "homeserver.cli", "run", "--config", str(cfg)],
                            cwd=REPO, stdout=open(workdir / "server.log", "ab"), stderr=subprocess.STDOUT)
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_matrix/client/versions", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        postmaster = int((workdir / "postgres" / "postmaster.pid").read_text().split()[0])
        yield Target("ours", f"http://127.0.0.1:{port}", proc.pid, postmaster)
    except BaseException:
        print((workdir / "server.log").read_text()[-3000:], file=sys.stderr)  # the server's view of it
        raise
    finally:
        proc.terminate()
        proc.wait(60)
        shutil.rmtree(workdir, ignore_errors=True)


def synapse_target(script: Path) -> Target:
    out = subprocess.run(["bash", str(script), "start"], capture_output=True, text=True, check=True).stdout
    info = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return Target("synapse", info["BASE_URL"], int(info["SYNAPSE_PID"]), int(info["POSTGRES_PID"]))


def add_target_args(p: argparse.ArgumentParser, ours_port: int = 0, running: bool = False) -> None:
    """The options naming the servers to measure; `running`: also `--base-url` for one
    already running, with its process ids for CPU and memory figures."""
    p.add_argument("--ours", action="store_true", help="start and measure our server")
    p.add_argument("--ours-port", type=int, default=ours_port, help="0: a free port")
    p.add_argument("--synapse", action="store_true", help="measure Synapse (started by the anchor script)")
    p.add_argument("--synapse-script", default=str(SYNAPSE_SCRIPT))
    if running:
        p.add_argument("--base-url", help="measure an already running server (e.g. Synapse)")
        p.add_argument("--server-pid", type=int, help="with --base-url: the server's pid, for CPU figures")
        p.add_argument("--postmaster-pid", type=int, help="with --base-url: its PostgreSQL's postmaster pid")


def running_target(args: argparse.Namespace) -> Target | None:
    """The already running server the options name (`--url` or `--base-url`, where a
    benchmark offers them); its name is its URL as given."""
    url = getattr(args, "url", None) or getattr(args, "base_url", None)
    if not url:
        return None
    return Target(url, url.rstrip("/"), getattr(args, "server_pid", None), getattr(args, "postmaster_pid", None))


async def each_target(args: argparse.Namespace, run: Callable[[Target], Awaitable[dict]],
                      prefix: str, ours_config: str | Callable[[Path], str] = "") -> dict[str, dict]:
    """`run` against each server the options name: ours (with `ours_config` added to its
    config), an already running one, Synapse."""
    results: dict[str, dict] = {}
    if args.ours:
        with ours(prefix, args.ours_port, ours_config) as target:
            results["ours"] = await run(target)
    running = running_target(args)
    if running:
        results[running.name] = await run(running)
    if args.synapse:
        results["synapse"] = await run(synapse_target(Path(args.synapse_script)))
    return results


def command_line(module: str) -> str:
    return f"python -m {module} " + " ".join(sys.argv[1:])


def report(results: Any, table: str | None, json_path: str | None, markdown_path: str | None = None,
           heading: str = "Run") -> None:
    """Print the raw results and the table; write them where the options say (the table
    appended under a dated heading)."""
    print(json.dumps(results, indent=2))
    if table is not None:
        print(table)
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=2))
    if markdown_path and table is not None:
        with open(markdown_path, "a") as f:
            f.write(f"\n## {heading} of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n{table}")
