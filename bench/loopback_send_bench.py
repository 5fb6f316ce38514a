"""What one loopback send() costs when the sends come back to back, against when Python
work sits between them (the receiver has gone back to sleep and each send wakes it): the
measurement behind holding a slice's long-poll answers and sending them together
(`homeserver/held_writes.py`).

    python -m bench.loopback_send_bench --connections 5000 --work-us 80

A child process holds `--connections` TCP connections and reads them with epoll; the
parent sends 1,500 bytes on each, with `--work-us` microseconds of busy Python between
two sends (0 and the given value), and reports the mean time inside send()."""
from __future__ import annotations

import argparse
import os
import select
import socket
import time

PAYLOAD = b"x" * 1500


def _reader(port: int, count: int) -> None:
    conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    poller = select.epoll()
    by_fd = {}
    for c in conns:
        c.setblocking(False)
        poller.register(c.fileno(), select.EPOLLIN)
        by_fd[c.fileno()] = c
    expected, got = count * len(PAYLOAD), 0
    while got < expected:
        for fd, _ in poller.poll():
            try:
                got += len(by_fd[fd].recv(65536))
            except BlockingIOError:
                pass
    os._exit(0)


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def measure(count: int, work_us: float) -> float:
    """Mean microseconds inside send() over `count` connections."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(count)
    port = listener.getsockname()[1]
    pid = os.fork()
    if pid == 0:
        listener.close()
        _reader(port, count)
    conns = [listener.accept()[0] for _ in range(count)]
    time.sleep(0.5)  # the reader is asleep in epoll
    inside = 0.0
    for c in conns:
        _busy(work_us / 1e6)
        t0 = time.perf_counter()
        c.send(PAYLOAD)
        inside += time.perf_counter() - t0
    os.waitpid(pid, 0)
    for c in conns:
        c.close()
    listener.close()
    return 1e6 * inside / count


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", type=int, default=5000)
    p.add_argument("--work-us", type=float, default=80.0)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    for work in (0.0, args.work_us):
        means = sorted(measure(args.connections, work) for _ in range(args.repeats))
        print(f"{work:5.0f} us of work between sends: send() {means[len(means) // 2]:.1f} us "
              f"(median of {args.repeats}; {', '.join(f'{m:.1f}' for m in means)})")


if __name__ == "__main__":
    main()
