"""`homeserver run-all` (what `make run` starts) supervises the ERP bridge: the bridge
SIGKILLed in the middle of an ERP burst is back within 10 s, the homeserver never stops,
and nothing the bridge acknowledged is lost or doubled (in the room or at the webhook);
only the homeserver's own death stops everything."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import quote

import yaml

from appservice.erp_bridge.config import generate_config_text
from homeserver.config import lifted_rate_limits_yaml
from tests.erp_bridge.test_lifecycle import ErpProcess
from tests.server_harness import REPO, Http, ServerProcess, free_port


def answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1)
        return True
    except urllib.error.HTTPError as e:
        return e.code != 503
    except OSError:
        return False


def wait(predicate, timeout: float, what: str) -> float:
    start = time.time()
    while time.time() - start < timeout:
        if predicate():
            return time.time() - start
        time.sleep(0.05)
    raise AssertionError(f"{what} not within {timeout}s")


def test_bridge_killed_under_run_all_comes_back_and_loses_nothing(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    hs_port, bridge_port, erp_port = free_port(), free_port(), free_port()
    config = tmp_path / "homeserver.yaml"
    config.write_text(
        f"server_name: test.local\npublic_baseurl: http://127.0.0.1:{hs_port}/\n"
        f"data_dir: {data}\nlog_level: INFO\n"
        f"listeners:\n  - port: {hs_port}\n    bind_address: 127.0.0.1\n"
        "registration:\n  bcrypt_rounds: 4\n" + lifted_rate_limits_yaml()
        + f"app_service_config_files:\n  - {data / 'erp-bridge-registration.yaml'}\n")
    # The bridge config run-all would write, with a webhook and short retry delays.
    text = generate_config_text(server_name="test.local", hs_url=f"http://127.0.0.1:{hs_port}",
                                port=bridge_port, webhook_url=f"http://127.0.0.1:{erp_port}/hook",
                                pgdata=str(data / "postgres"))
    text = text.replace("webhook_initial_backoff_s: 0.5", "webhook_initial_backoff_s: 0.1")
    text = text.replace("webhook_max_backoff_s: 10", "webhook_max_backoff_s: 1")
    (data / "erp-bridge.yaml").write_text(text)
    bridge_cfg = yaml.safe_load(text)
    erp_hook = ErpProcess(bridge_cfg["erp"]["webhook_secret"], erp_port)
    log_path = tmp_path / "run-all.log"
    log = open(log_path, "wb")
    launcher = subprocess.Popen([sys.executable, "-m", "homeserver.cli", "run-all", "--config", str(config)],
                                cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    hs_url, bridge_url = f"http://127.0.0.1:{hs_port}", f"http://127.0.0.1:{bridge_port}"

    def pid_of(what: str) -> int:
        found = re.findall(rf"{what} \(pid (\d+)\)", log_path.read_text())
        return int(found[-1]) if found else 0

    try:
        wait(lambda: answers(hs_url + "/health"), 120, "the homeserver")
        wait(lambda: answers(bridge_url + "/_matrix/app/v1/ping"), 60, "the bridge")
        hs_pid, bridge_pid = pid_of("homeserver running"), pid_of("ERP bridge started")
        assert hs_pid and bridge_pid
        erp = Http(bridge_url, bridge_cfg["erp"]["api_token"])
        wait(lambda: erp.request("PUT", "/_erp/v1/tenants/acme", {"name": "ACME"})[0] == 200, 60, "provisioning")
        assert erp.request("PUT", "/_erp/v1/tenants/acme/users/anna",
                           {"display_name": "Anna", "active": True})[0] == 200
        status, obj = erp.request("PUT", "/_erp/v1/tenants/acme/objects/order/4711",
                                  {"title": "Order 4711", "participants": ["anna"]})
        assert status == 200, obj

        # The homeserver is watched the whole time.
        health_failures, watching = [], threading.Event()

        def watch() -> None:
            while not watching.is_set():
                if not answers(hs_url + "/health"):
                    health_failures.append(time.time())
                time.sleep(0.05)

        total, results, retries = 40, {}, [0]

        def post_all() -> None:
            client = Http(bridge_url, bridge_cfg["erp"]["api_token"])
            for i in range(total):
                while True:  # as the API asks: repeat until a 200
                    try:
                        status, body = client.request(
                            "POST", "/_erp/v1/tenants/acme/objects/order/4711/messages",
                            {"sender": "anna", "body": f"burst {i}", "txn_id": f"b{i}"})
                    except OSError:
                        status, body = 0, None
                    if status == 200:
                        results[i] = body["event_id"]
                        break
                    retries[0] += 1
                    time.sleep(0.05)

        watcher, poster = threading.Thread(target=watch), threading.Thread(target=post_all)
        watcher.start()
        poster.start()
        wait(lambda: len(results) >= 8, 60, "the first posts")
        os.kill(bridge_pid, signal.SIGKILL)
        killed_at = time.time()
        wait(lambda: not answers(bridge_url + "/_matrix/app/v1/ping"), 5, "the bridge going away")
        back_after = wait(lambda: answers(bridge_url + "/_matrix/app/v1/ping"), 15, "the bridge coming back")
        back_after = time.time() - killed_at
        assert back_after < 10, back_after
        poster.join(120)
        watching.set()
        watcher.join()
        assert len(results) == total and retries[0] > 0

        assert pid_of("ERP bridge started") not in (0, bridge_pid)
        assert pid_of("homeserver running") == hs_pid and launcher.poll() is None
        os.kill(hs_pid, 0)  # the very same homeserver process is still there
        assert health_failures == []
        assert re.search(rf"ERP bridge \(pid {bridge_pid}\) killed by SIGKILL .*restarting in", log_path.read_text())

        # Nothing lost or doubled: in the room, and at the ERP after its dedupe, in order.
        as_http = Http(hs_url, bridge_cfg["appservice"]["as_token"])
        status, page = as_http.request(
            "GET", f"/_matrix/client/v3/rooms/{quote(obj['room_id'])}/messages?dir=f&limit=200"
                   f"&user_id={quote('@_erp_bot_acme:test.local')}")
        bodies = [e["content"]["body"] for e in page["chunk"] if e["type"] == "m.room.message"]
        assert sorted(bodies) == sorted(f"burst {i}" for i in range(total))
        in_room = [e["event_id"] for e in page["chunk"] if e["type"] == "m.room.message"]
        assert set(in_room) == set(results.values())
        got = erp_hook.wait_for(lambda ds: {d["event_id"] for d in ds} >= set(in_room), timeout=60)
        delivered = [d["event_id"] for d in got if d["type"] == "io.erpchat.message"]
        assert delivered == in_room

        # The homeserver's own death stops everything.
        os.kill(hs_pid, signal.SIGKILL)
        assert launcher.wait(40) == 1
        new_bridge = pid_of("ERP bridge started")
        wait(lambda: not _alive(new_bridge), 10, "the bridge stopping")
        assert "stopping everything" in log_path.read_text()
    finally:
        if launcher.poll() is None:
            launcher.send_signal(signal.SIGTERM)
            launcher.wait(60)
        erp_hook.stop()
        log.close()
        ServerProcess(data).stop_postgres()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # A zombie (exited, not reaped yet) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False
