"""Media throughput: upload and download a file (20 MiB by default) through the
client-server API, and watch the server's memory while doing it. It speaks only HTTP, so
it runs against any homeserver:

    python -m bench.media_bench --ours                        # starts our server
    python -m bench.media_bench --base-url URL --token TOKEN [--pid PID]

`--pid` (the server's process id, on this machine) adds its RSS, sampled every 20 ms:
before, at the peak of the uploads, at the peak of the downloads. Downloads use the
authenticated /_matrix/client/v1/media route, falling back to the legacy one for servers
without it. Each download is checked against the uploaded bytes' SHA-256."""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import time
import uuid
from typing import Any

import aiohttp

from bench.common import command_line, ours, report
from bench.procstats import rss_mib

MiB = 1024 * 1024


class RssSampler:
    def __init__(self, pid: int | None) -> None:
        self.pid, self.peak, self._task = pid, 0.0, None

    async def _run(self) -> None:
        while True:
            self.peak = max(self.peak, rss_mib(self.pid))
            await asyncio.sleep(0.02)

    def now(self) -> float | None:
        return rss_mib(self.pid) if self.pid else None

    def start(self) -> None:
        self.peak = 0.0
        if self.pid:
            self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> float | None:
        if self._task is None:
            return None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        return self.peak


async def upload(session: aiohttp.ClientSession, base: str, token: str, data: bytes) -> tuple[str, float]:
    t0 = time.perf_counter()
    async with session.post(f"{base}/_matrix/media/v3/upload", params={"filename": "bench.bin"}, data=data,
                            headers={"Authorization": f"Bearer {token}",
                                     "Content-Type": "application/octet-stream"}) as r:
        body = await r.json(content_type=None)
    if r.status != 200:
        raise RuntimeError(f"upload -> {r.status} {body}")
    return body["content_uri"], time.perf_counter() - t0


async def download(session: aiohttp.ClientSession, base: str, token: str, mxc: str,
                   paths: list[str]) -> tuple[str, int, float]:
    """(sha256 hex, bytes, seconds) of one download, streamed and hashed as it arrives."""
    server_media = mxc[len("mxc://"):]
    last = None
    for prefix in list(paths):
        t0 = time.perf_counter()
        async with session.get(f"{base}{prefix}/download/{server_media}",
                               headers={"Authorization": f"Bearer {token}"}) as r:
            if r.status == 404 and prefix != paths[-1]:
                paths.remove(prefix)  # no authenticated media on this server: use the next
                last = r.status
                continue
            if r.status != 200:
                raise RuntimeError(f"download -> {r.status} {await r.text()}")
            h, n = hashlib.sha256(), 0
            async for chunk in r.content.iter_chunked(1 << 20):
                h.update(chunk)
                n += len(chunk)
            return h.hexdigest(), n, time.perf_counter() - t0
    raise RuntimeError(f"download -> {last}")


async def run(base: str, token: str, pid: int | None, size: int, rounds: int, concurrency: int) -> dict[str, Any]:
    data = os.urandom(size)
    digest = hashlib.sha256(data).hexdigest()
    sampler = RssSampler(pid)
    paths = ["/_matrix/client/v1/media", "/_matrix/media/v3"]
    results: dict[str, Any] = {"file_mib": size / MiB, "rounds": rounds, "concurrency": concurrency,
                               "rss_before_mib": sampler.now()}
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as session:
        sampler.start()
        up_times, mxcs = [], []
        for _ in range(rounds):
            mxc, seconds = await upload(session, base, token, data)
            up_times.append(seconds)
            mxcs.append(mxc)
        t0 = time.perf_counter()
        await asyncio.gather(*(upload(session, base, token, data) for _ in range(concurrency)))
        parallel_up = time.perf_counter() - t0
        results["rss_peak_upload_mib"] = await sampler.stop()

        sampler.start()
        down_times = []
        for mxc in mxcs:
            got, n, seconds = await download(session, base, token, mxc, paths)
            if got != digest or n != size:
                raise RuntimeError(f"download of {mxc} differs from the upload ({n} bytes)")
            down_times.append(seconds)
        t0 = time.perf_counter()
        await asyncio.gather(*(download(session, base, token, mxcs[0], paths) for _ in range(concurrency)))
        parallel_down = time.perf_counter() - t0
        results["rss_peak_download_mib"] = await sampler.stop()
    mib = size / MiB
    results.update({
        "upload_median_s": statistics.median(up_times),
        "upload_mib_per_s": mib / statistics.median(up_times),
        "download_median_s": statistics.median(down_times),
        "download_mib_per_s": mib / statistics.median(down_times),
        "parallel_upload_mib_per_s": concurrency * mib / parallel_up,
        "parallel_download_mib_per_s": concurrency * mib / parallel_down,
        "download_path": paths[0],
        "rss_after_mib": sampler.now(),
    })
    return results


async def register_user(base: str) -> str:
    name = f"mediabench{uuid.uuid4().hex[:8]}"
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{base}/_matrix/client/v3/register", json={
                "username": name, "password": "bench-pw-" + name, "auth": {"type": "m.login.dummy"}}) as r:
            body = await r.json()
    if r.status != 200:
        raise RuntimeError(f"register -> {r.status} {body}")
    return body["access_token"]


def markdown(r: dict[str, Any], command: str) -> str:
    def f(v: Any) -> str:
        return f"{v:.1f}" if isinstance(v, (int, float)) else "-"
    rows = [("upload, one at a time (MiB/s)", r["upload_mib_per_s"]),
            ("download, one at a time (MiB/s)", r["download_mib_per_s"]),
            (f"upload, {r['concurrency']} at once (MiB/s)", r["parallel_upload_mib_per_s"]),
            (f"download, {r['concurrency']} at once (MiB/s)", r["parallel_download_mib_per_s"]),
            ("server RSS before (MiB)", r["rss_before_mib"]),
            ("server RSS peak while uploading (MiB)", r["rss_peak_upload_mib"]),
            ("server RSS peak while downloading (MiB)", r["rss_peak_download_mib"]),
            ("server RSS after (MiB)", r["rss_after_mib"])]
    lines = [f"Command: `{command}` ({r['file_mib']:.0f} MiB file, {r['rounds']} rounds)", "",
             "| measure | value |", "|---|---:|"]
    lines += [f"| {label} | {f(value)} |" for label, value in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ours", action="store_true", help="start our server and register a user on it")
    p.add_argument("--ours-port", type=int, default=18449)
    p.add_argument("--base-url", help="a running homeserver")
    p.add_argument("--token", help="an access token on it (default: register a user)")
    p.add_argument("--pid", type=int, help="the server's process id, to sample its RSS")
    p.add_argument("--size-mib", type=float, default=20)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    if not args.ours and not args.base_url:
        p.error("give --ours or --base-url")
    size = int(args.size_mib * MiB)

    def measure(base: str, pid: int | None) -> dict[str, Any]:
        token = args.token or asyncio.run(register_user(base))
        return asyncio.run(run(base, token, pid, size, args.rounds, args.concurrency))

    if args.ours:
        with ours("media-bench-", args.ours_port) as target:
            results = measure(target.base_url, target.server_pid)
    else:
        results = measure(args.base_url.rstrip("/"), args.pid)
    report(results, markdown(results, command_line("bench.media_bench")), args.json)


if __name__ == "__main__":
    main()
