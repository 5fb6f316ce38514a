"""The `homeserver` command: config validation messages, generate-config, register-user,
and refusing a database schema newer than the code."""
from __future__ import annotations

import subprocess
import sys

import psycopg2
import yaml

from tests.server_harness import REPO, Http, ServerProcess


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
