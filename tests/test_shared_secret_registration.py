"""Shared-secret registration (`/_synapse/admin/v1/register`) as Synapse's own
`register_new_matrix_user` script does it. The script comes from PyPI's matrix-synapse,
installed once into the virtualenv the federation tests use (tests/federation/synapse_harness.py);
when it cannot be installed (no registry), the test replays the script's exact HTTP
exchange instead (nonce, then HMAC-SHA1 over nonce/user/password/admin) and says so."""
from __future__ import annotations

import hashlib
import hmac
import subprocess
import warnings
from pathlib import Path

import psycopg2
import pytest

from tests.federation.synapse_harness import synapse_python
from tests.server_harness import Http, ServerProcess

# The first run may install matrix-synapse (a minute or two) before its first test.
pytestmark = pytest.mark.timeout(1200)
SECRET = "s3cret-for-registration"
SERVER = "test.local"


def _script() -> Path | None:
    """Synapse's own script, from the tests' cached Synapse (the federation tests' install)."""
    try:
        python = synapse_python()
    except (subprocess.SubprocessError, OSError) as e:
        warnings.warn(f"matrix-synapse could not be installed ({e}); replaying its HTTP exchange instead")
        return None
    script = python.parent / "register_new_matrix_user"
    return script if script.exists() else None


def _replay(base_url: str, user: str, password: str, admin: bool, secret: str) -> tuple[int, str]:
    """register_new_matrix_user's exchange, step for step (for machines without PyPI)."""
    http = Http(base_url)
    status, body = http.request("GET", "/_synapse/admin/v1/register")
    if status != 200:
        return 1, f"ERROR! Received {status}"
    nonce = body["nonce"]
    mac = hmac.new(key=secret.encode("utf8"), digestmod=hashlib.sha1)
    for part in (nonce.encode("utf8"), b"\x00", user.encode("utf8"), b"\x00", password.encode("utf8"), b"\x00",
                 b"admin" if admin else b"notadmin"):
        mac.update(part)
    status, body = http.request("POST", "/_synapse/admin/v1/register", {
        "nonce": nonce, "username": user, "password": password, "mac": mac.hexdigest(), "admin": admin,
        "user_type": None})
    if status != 200:
        return 1, f"ERROR! Received {status}\n{body.get('error')}"
    return 0, "Success!"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = ServerProcess(tmp_path_factory.mktemp("sharedsecret"),
                      extra_config=f"registration:\n  bcrypt_rounds: 4\n  shared_secret: {SECRET}\n")
    s.start()
    yield s
    s.stop()
    s.stop_postgres()


@pytest.fixture(scope="module")
def register(srv):
    script = _script()

    def run(user: str, password: str, admin: bool, secret: str = SECRET) -> tuple[int, str]:
        if script is None:
            return _replay(srv.base_url, user, password, admin, secret)
        r = subprocess.run([str(script), "-u", user, "-p", password, "--admin" if admin else "--no-admin",
                            "-k", secret, srv.base_url], capture_output=True, text=True, timeout=120)
        return r.returncode, r.stdout + r.stderr
    run.real_script = script is not None
    return run


def _user_row(srv, user_id: str):
    with psycopg2.connect(srv.dsn()) as conn, conn.cursor() as cur:
        cur.execute("SELECT is_admin, displayname FROM users WHERE user_id = %s", (user_id,))
        return cur.fetchone()


def test_register_admin_and_user_with_the_script(srv, register):
    code, out = register("Root", "root-pw-1", admin=True)
    assert code == 0 and "Success!" in out, out
    assert _user_row(srv, f"@root:{SERVER}") == (True, "root")  # the localpart is lowercased, as in Synapse
    code, out = register("plain", "plain-pw-1", admin=False)
    assert code == 0, out
    assert _user_row(srv, f"@plain:{SERVER}") == (False, "plain")
    status, login = Http(srv.base_url).request("POST", "/_matrix/client/v3/login", {
        "type": "m.login.password", "identifier": {"type": "m.id.user", "user": "root"}, "password": "root-pw-1"})
    assert status == 200
    admin = Http(srv.base_url, login["access_token"])
    assert admin.request("GET", "/_synapse/admin/v2/users")[0] == 200


def test_wrong_secret_and_taken_names_fail(srv, register):
    code, out = register("mallory", "pw-mallory", admin=True, secret="not-the-secret")
    assert code != 0 and "HMAC incorrect" in out, out
    assert _user_row(srv, f"@mallory:{SERVER}") is None
    assert register("dup", "pw-dup-1", admin=False)[0] == 0
    code, out = register("dup", "pw-dup-2", admin=False)
    assert code != 0, out


def test_nonce_is_single_use_and_required(srv):
    http = Http(srv.base_url)
    _, body = http.request("GET", "/_synapse/admin/v1/register")
    nonce = body["nonce"]
    mac = hmac.new(SECRET.encode(), digestmod=hashlib.sha1)
    mac.update(f"{nonce}\x00once\x00pw-once\x00notadmin".encode())
    request = {"nonce": nonce, "username": "once", "password": "pw-once", "mac": mac.hexdigest()}
    assert http.request("POST", "/_synapse/admin/v1/register", request)[0] == 200
    status, err = http.request("POST", "/_synapse/admin/v1/register", request)
    assert status == 400 and err["error"] == "unrecognised nonce"
    status, err = http.request("POST", "/_synapse/admin/v1/register", {"username": "x"})
    assert status == 400 and err["errcode"] == "M_BAD_JSON"


def test_disabled_without_a_secret(tmp_path):
    s = ServerProcess(tmp_path / "hs")
    s.start()
    try:
        http = Http(s.base_url)
        _, body = http.request("GET", "/_synapse/admin/v1/register")
        status, err = http.request("POST", "/_synapse/admin/v1/register", {
            "nonce": body["nonce"], "username": "x", "password": "y", "mac": "0" * 40})
        assert status == 400 and err["error"] == "Shared secret registration is not enabled"
    finally:
        s.stop()
        s.stop_postgres()
