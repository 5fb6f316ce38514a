"""Prometheus metrics on their own listener, scraped before and after a scripted workload:
the counters move by exactly what the workload did. /metrics is not served on the client
port; /health answers on both."""
from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request

import psycopg2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.server_harness import Http, ServerProcess, free_port

V3 = "/_matrix/client/v3"
SEND_ROUTE = "/_matrix/client/(?:v3|r0)/rooms/{room_id}/send/{event_type}/{txn_id}"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    port, metrics_port = free_port(), free_port()
    s = ServerProcess(tmp_path_factory.mktemp("metrics"), port=port, extra_config=(
        f"listeners:\n  - port: {port}\n    bind_address: 127.0.0.1\n    resources: [client]\n"
        f"  - port: {metrics_port}\n    bind_address: 127.0.0.1\n    resources: [metrics]\n"))
    s.metrics_url = f"http://127.0.0.1:{metrics_port}"
    s.start()
    yield s
    s.stop()
    s.stop_postgres()


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def scrape(srv) -> dict[tuple[str, tuple], float]:
    status, text = _get(srv.metrics_url + "/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _events(srv) -> int:
    with psycopg2.connect(srv.dsn()) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM events")
        return cur.fetchone()[0]


def test_metrics_only_on_the_metrics_listener(srv):
    status, body = _get(srv.base_url + "/metrics")
    assert status == 404 and "M_UNRECOGNIZED" in body
    assert _get(srv.metrics_url + "/_matrix/client/versions")[0] == 404
    assert _get(srv.base_url + "/health") == (200, "OK")
    assert _get(srv.metrics_url + "/health") == (200, "OK")


def test_counters_move_by_the_workload(srv):
    alice = Http(srv.base_url)
    reg = alice.register("alice")
    alice.token = reg["access_token"]
    carol = Http(srv.base_url)
    carol.token = carol.register("carol")["access_token"]
    _, room = alice.request("POST", f"{V3}/createRoom", {"preset": "public_chat"})
    room_id = room["room_id"]
    assert carol.request("POST", f"{V3}/rooms/{room_id}/join", {})[0] == 200
    _, first = carol.request("GET", f"{V3}/sync?timeout=0")

    before = scrape(srv)
    events_before = _events(srv)
    polled: list = []
    poll = threading.Thread(target=lambda: polled.append(
        carol.request("GET", f"{V3}/sync?timeout=20000&since={first['next_batch']}")))
    poll.start()
    deadline = time.time() + 10
    while value(scrape(srv), "homeserver_sync_longpolls_open") < 1:
        assert time.time() < deadline, "the long-poll never showed as open"
        time.sleep(0.05)
    sends = 7
    for i in range(sends):
        status, _ = alice.request("PUT", f"{V3}/rooms/{room_id}/send/m.room.message/t{i}",
                                  {"msgtype": "m.text", "body": f"m{i}"})
        assert status == 200
    poll.join(20)
    assert polled and polled[0][0] == 200
    assert _get(srv.base_url + "/no/such/path")[0] == 404
    after = scrape(srv)

    written = _events(srv) - events_before
    assert written == sends
    assert value(after, "homeserver_events_persisted_total") - value(before, "homeserver_events_persisted_total") \
        == written
    assert value(after, "homeserver_persist_batch_events_sum") - value(before, "homeserver_persist_batch_events_sum") \
        == written
    batches = value(after, "homeserver_persist_batch_events_count") - value(before, "homeserver_persist_batch_events_count")
    assert 1 <= batches <= sends
    assert value(after, "homeserver_persist_batch_duration_seconds_count") - \
        value(before, "homeserver_persist_batch_duration_seconds_count") == batches
    sent = dict(method="PUT", route=SEND_ROUTE, status="200")
    assert value(after, "homeserver_http_requests_total", **sent) - \
        value(before, "homeserver_http_requests_total", **sent) == sends
    timed = dict(method="PUT", route=SEND_ROUTE)
    assert value(after, "homeserver_http_request_duration_seconds_count", **timed) - \
        value(before, "homeserver_http_request_duration_seconds_count", **timed) == sends
    missed = dict(method="GET", route="unmatched", status="404")
    assert value(after, "homeserver_http_requests_total", **missed) - \
        value(before, "homeserver_http_requests_total", **missed) == 1
    assert value(after, "homeserver_sync_longpoll_wakeups_total") - \
        value(before, "homeserver_sync_longpoll_wakeups_total") >= 1
    assert value(after, "homeserver_sync_longpolls_open") == 0
    assert value(after, "homeserver_notifier_fanout_users_count") > value(before, "homeserver_notifier_fanout_users_count")
    assert value(after, "homeserver_db_transaction_duration_seconds_count") > \
        value(before, "homeserver_db_transaction_duration_seconds_count")
    assert value(after, "homeserver_db_connections_max") == 10
    assert value(after, "homeserver_presence_users", state="online") >= 1
    assert value(after, "process_cpu_seconds_total") > 0  # prometheus-client's process collector
    assert any(name == "python_info" for name, _ in after)


def test_listeners_answer_503_until_start_up_is_complete(tmp_path):
    s = ServerProcess(tmp_path / "hs")
    s.write_config()
    from tests.server_harness import launch
    s.proc = launch("homeserver.cli", s.config_path, s.data_dir / "server.log")
    seen: list[tuple[int, str]] = []
    try:
        deadline = time.time() + 60
        while not seen or seen[-1][0] != 200:
            assert time.time() < deadline, seen
            try:
                seen.append(_get(s.base_url + "/health"))
                if seen[-1][0] == 503:
                    status, body = _get(s.base_url + "/_matrix/client/versions")
                    assert status in (503, 200), body
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.02)
        assert (503, "STARTING") in seen, seen
        assert _get(s.base_url + "/_matrix/client/versions")[0] == 200
    finally:
        s.stop()
        s.stop_postgres()


def test_health_reports_the_database(srv):
    assert _get(srv.base_url + "/health") == (200, "OK")
    srv.postgres_stop_under_server()
    try:
        status, body = _get(srv.base_url + "/health")
        assert status == 503
    finally:
        srv.postgres_start_under_server()
    deadline = time.time() + 30
    while _get(srv.base_url + "/health")[0] != 200:
        assert time.time() < deadline
        time.sleep(0.2)
