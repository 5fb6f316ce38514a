"""The `homeserver` command: config validation messages, generate-config, register-user,
and refusing a database schema newer than the code."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg2
import yaml

from tests.server_harness import REPO, Http, ServerProcess, free_port, launch, terminate, wait_until_up


def _cli(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "homeserver.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120, input=input)


def test_unknown_key_and_bad_value_name_the_key(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("server_name: x.test\nlisteners:\n  - port: 99999\nbogus_key: 1\n")
    result = _cli("run", "--config", str(cfg))
    assert result.returncode == 2
    assert "bogus_key: unknown key" in result.stderr
    assert "listeners.0.port" in result.stderr


def test_missing_config_file_is_reported(tmp_path):
    result = _cli("run", "--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "cannot read config file" in result.stderr


def test_generate_config_has_fresh_secrets_and_loads(tmp_path):
    out1, out2 = tmp_path / "a.yaml", tmp_path / "b.yaml"
    for out in (out1, out2):
        r = _cli("generate-config", "--server-name", "corp.example", "--data-dir",
                 str(tmp_path / "data"), "--output", str(out))
        assert r.returncode == 0, r.stderr
    a, b = yaml.safe_load(out1.read_text()), yaml.safe_load(out2.read_text())
    assert a["server_name"] == "corp.example"
    assert a["registration"]["shared_secret"] and a["registration"]["shared_secret"] != b["registration"]["shared_secret"]
    assert a["signing_key_path"].endswith("signing.key")
    # refuses to overwrite without --force
    assert _cli("generate-config", "--server-name", "x", "--output", str(out1)).returncode == 1


def test_readme_commands_generate_config_register_user_and_run(tmp_path):
    """The README's "Other commands", as written: generate-config, register-user, then
    `homeserver run` with the generated config (which names the ERP bridge registration
    that only run-all creates: run starts without it and says so)."""
    homeserver = str(Path(sys.executable).parent / "homeserver")
    r = subprocess.run([homeserver, "generate-config", "--server-name", "chat.example.com", "-o", "homeserver.yaml"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    config = tmp_path / "homeserver.yaml"
    port = free_port()  # the only change: a free port instead of 8008, which may be taken here
    config.write_text(config.read_text().replace("port: 8008", f"port: {port}").replace(":8008/", f":{port}/"))
    r = subprocess.run([homeserver, "register-user", "alice", "--admin", "--config", "homeserver.yaml"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120, input="pw-123\npw-123\n")
    assert r.returncode == 0, r.stderr
    log = tmp_path / "run.log"
    proc = launch("homeserver.cli", config, log)
    try:
        wait_until_up(proc, f"http://127.0.0.1:{port}/_matrix/client/versions", 60, "server", log.read_text)
        status, body = Http(f"http://127.0.0.1:{port}").request("POST", "/_matrix/client/v3/login", {
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"}, "password": "pw-123"})
        assert status == 200 and body["user_id"] == "@alice:chat.example.com", body
        assert "erp-bridge-registration.yaml does not exist: running without the bridge" in log.read_text()
    finally:
        terminate(proc)
        ServerProcess(tmp_path / "data").stop_postgres()


def test_a_missing_registration_other_than_the_bridges_still_stops_start_up(tmp_path):
    srv = ServerProcess(tmp_path / "hs", extra_config=f"app_service_config_files: [{tmp_path / 'nope.yaml'}]\n")
    srv.write_config()
    try:
        srv.start(timeout=60)
        raise AssertionError("server started with a missing registration")
    except RuntimeError as e:
        assert "cannot read application service registration" in str(e)
    finally:
        srv.stop()
        srv.stop_postgres()


def test_register_user_then_login_and_schema_guard(tmp_path):
    srv = ServerProcess(tmp_path / "hs")
    srv.write_config()
    r = _cli("register-user", "boss", "--password", "pw-123", "--admin", "--config", str(srv.config_path))
    assert r.returncode == 0, r.stderr
    assert "@boss:test.local (admin)" in r.stdout
    again = _cli("register-user", "boss", "--password", "x", "--config", str(srv.config_path))
    assert again.returncode == 1 and "already exists" in again.stderr
    srv.start()
    try:
        status, body = Http(srv.base_url).request("POST", "/_matrix/client/v3/login", {
            "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "boss"},
            "password": "pw-123"})
        assert status == 200 and body["user_id"] == "@boss:test.local"
        # A database from a newer version of the code is refused, not misused.
        conn = psycopg2.connect(srv.dsn())
        with conn, conn.cursor() as cur:
            cur.execute("INSERT INTO schema_version (version) VALUES (9999)")
        conn.close()
        srv.stop()
        srv.proc = None
        try:
            srv.start(timeout=30)
            raise AssertionError("server started against a newer schema")
        except RuntimeError as e:
            assert "newer database" in str(e) or "9999" in str(e)
    finally:
        srv.stop()
        srv.stop_postgres()
