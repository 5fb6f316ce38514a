"""run-all's bridge supervisor: every exit is logged with its cause and followed by a
restart after a delay that doubles up to a cap while the bridge keeps failing, and starts
over once it has run long enough (the real kill-and-restart is in
tests/erp_bridge/test_supervision.py)."""
from __future__ import annotations

import logging
from pathlib import Path

from homeserver import launcher


class FakeProc:
    count = 0

    def __init__(self, cmd, **popen_options) -> None:
        FakeProc.count += 1
        self.pid = 1000 + FakeProc.count
        self.code = None

    def poll(self):
        return self.code


def test_restart_delays_double_cap_and_reset(monkeypatch, caplog):
    now = [0.0]
    monkeypatch.setattr(launcher.subprocess, "Popen", FakeProc)
    sup = launcher.BridgeSupervisor(Path("bridge.yaml"), clock=lambda: now[0])
    sup.start()
    delays = []
    caplog.set_level(logging.INFO, "homeserver.launcher")
    for _ in range(7):
        now[0] += 0.5            # dies quickly every time
        sup.proc.code = -9
        dead_at = now[0]
        sup.poll()
        assert sup.proc is None
        while sup.proc is None:
            now[0] += 0.25
            sup.poll()
        delays.append(now[0] - dead_at)
    assert delays == [1, 2, 4, 8, 16, 30, 30]
    assert "killed by SIGKILL after 0.5 s; restarting in 1 s" in caplog.text
    # A bridge that ran for a minute before dying is restarted after 1 s again.
    now[0] += 61
    sup.proc.code = 1
    dead_at = now[0]
    sup.poll()
    while sup.proc is None:
        now[0] += 0.25
        sup.poll()
    assert now[0] - dead_at == 1
    assert "exited with status 1 after 61.0 s" in caplog.text
    assert sup.restarts == 8


def test_describe_exit():
    assert launcher.describe_exit(-9) == "killed by SIGKILL"
    assert launcher.describe_exit(0) == "exited with status 0"
    assert launcher.describe_exit(-200) == "killed by signal 200"
