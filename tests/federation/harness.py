"""Servers that federate, started by the tests on loopback: each has a client listener
(HTTP) and a federation listener (HTTPS). Server names are `127.0.0.1:<federation
port>`, so discovery skips .well-known and SRV. Certificates are issued by one test CA
that every test server lists in `federation.trusted_certificates`: verification is real,
no switch is turned off."""
from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from signedjson.key import decode_signing_key_base64
from signedjson.sign import sign_json

from homeserver.config import lifted_rate_limits_yaml
from tests.server_harness import REPO, Http, ServerProcess, exchange, free_port, serving


_CA: tuple[Path, Any] | None = None


def test_ca() -> tuple[Path, Any]:
    """One certificate authority per test session; every test server's certificate is
    issued by it and every test server trusts it, so peers verify each other for real."""
    global _CA
    if _CA is None:
        from cryptography.hazmat.primitives.asymmetric import ec
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "erp-homeserver test CA")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .sign(key, hashes.SHA256()))
        directory = Path(tempfile.mkdtemp(prefix="erp-hs-test-ca-"))
        path = directory / "ca.crt"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _CA = (path, (cert, key))
    return _CA


def make_certificate(directory: Path, host: str = "127.0.0.1") -> tuple[Path, Path]:
    """A server certificate for `host`, issued by the session's test CA."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "federation.crt", directory / "federation.key"
    if not cert_path.exists():
        from cryptography.hazmat.primitives.asymmetric import ec
        _, (ca_cert, ca_key) = test_ca()
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
                .issuer_name(ca_cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]),
                               critical=False)
                .sign(ca_key, hashes.SHA256()))
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return cert_path, key_path


@dataclass
class FederatedServer(ServerProcess):
    fed_port: int = field(default_factory=free_port)
    trusted: list[Path] = field(default_factory=list)
    federation_extra: str = ""   # more keys under `federation:` (indented two spaces)

    def __post_init__(self) -> None:
        self.server_name = f"127.0.0.1:{self.fed_port}"
        self.cert, self.key = make_certificate(self.data_dir / "tls")
        self.trusted = self.trusted or [test_ca()[0]]

    @property
    def fed_url(self) -> str:
        return f"https://127.0.0.1:{self.fed_port}"

    def write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        trusted = "".join(f"    - {p}\n" for p in self.trusted)
        self.config_path.write_text(
            f"server_name: '{self.server_name}'\n"
            f"public_baseurl: {self.base_url}/\n"
            f"data_dir: {self.data_dir}\n"
            "log_level: INFO\n"
            "listeners:\n"
            f"  - port: {self.port}\n    bind_address: 127.0.0.1\n    resources: [client]\n"
            f"  - port: {self.fed_port}\n    bind_address: 127.0.0.1\n    resources: [federation]\n"
            "    tls: true\n"
            "registration:\n  bcrypt_rounds: 4\n"
            "federation:\n  enabled: true\n"
            f"  tls_certificate_path: {self.cert}\n  tls_private_key_path: {self.key}\n"
            "  ip_range_whitelist: ['127.0.0.0/8']\n"
            "  min_retry_interval_ms: 200\n  max_retry_interval_ms: 2000\n"
            + (f"  trusted_certificates:\n{trusted}" if trusted else "")
            + self.federation_extra
            # Tests drive the servers far faster than people do: rate limits lifted here.
            + lifted_rate_limits_yaml() + self.extra_config
        )

    def signing_key(self):
        parts = (self.data_dir / "signing.key").read_text().split()
        return decode_signing_key_base64(parts[0], parts[1], parts[2])


class FedHttp:
    """A blocking HTTPS client for a federation listener, optionally signing requests
    as another server (with that server's key, read from its data directory)."""

    def __init__(self, server: FederatedServer) -> None:
        self.server = server
        self.ctx = ssl.create_default_context(cafile=str(test_ca()[0]))

    def request(self, method: str, path: str, body: Any = None, *, sign_as: FederatedServer | None = None,
                destination: str | None = None, headers: dict | None = None,
                raw: bytes | None = None) -> tuple[int, Any]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.server.fed_url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if sign_as is not None:
            req.add_header("Authorization", x_matrix(sign_as, method, path, destination or self.server.server_name,
                                                     body))
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        return exchange(req, timeout=60, context=self.ctx)


def x_matrix(origin: FederatedServer, method: str, uri: str, destination: str, content: Any = None) -> str:
    key = origin.signing_key()
    obj: dict = {"method": method, "uri": uri, "origin": origin.server_name, "destination": destination}
    if content is not None:
        obj["content"] = content
    signed = sign_json(obj, origin.server_name, key)
    sig = signed["signatures"][origin.server_name][f"ed25519:{key.version}"]
    return (f'X-Matrix origin="{origin.server_name}",destination="{destination}",'
            f'key="ed25519:{key.version}",sig="{sig}"')


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.1, what: str = "condition"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


V3 = "/_matrix/client/v3"


def register_admin(server: FederatedServer) -> None:
    """Create `admin` (password adm-pw) from the command line, before the server starts."""
    server.write_config()
    subprocess.run([sys.executable, "-m", "homeserver.cli", "register-user", "admin", "--password", "adm-pw",
                    "--admin", "--config", str(server.config_path)], cwd=REPO, check=True, capture_output=True)


@contextmanager
def federated_pair(tmp_path_factory, prefix: str, a_federation_extra: str = "",
                   admin_on_a: bool = False) -> Iterator[tuple[FederatedServer, FederatedServer]]:
    """Two servers A and B federating with each other (data directories `<prefix>-a` and
    `<prefix>-b`); A may take more `federation:` keys and the command-line `admin`
    (adm-pw). Both stopped, with their PostgreSQL, afterwards."""
    a = FederatedServer(tmp_path_factory.mktemp(f"{prefix}-a"), federation_extra=a_federation_extra)
    b = FederatedServer(tmp_path_factory.mktemp(f"{prefix}-b"))
    if admin_on_a:
        register_admin(a)
    with serving(a), serving(b):
        yield a, b


def admin_client(server: FederatedServer) -> Http:
    http = Http(server.base_url)
    _, login = http.request("POST", f"{V3}/login", {"type": "m.login.password", "user": "admin",
                                                    "password": "adm-pw"})
    return Http(server.base_url, login["access_token"])


def user(server: FederatedServer, name: str, tenant: str | None = None, admin: Http | None = None) -> Http:
    """Register `name` on `server` (optionally into a tenant, through the admin API)."""
    reg = Http(server.base_url).register(name)
    client = Http(server.base_url, reg["access_token"])
    client.user_id = reg["user_id"]
    if tenant is not None:
        assert admin is not None
        status, body = admin.request("PUT", f"/_homeserver/admin/v1/users/{reg['user_id']}/tenant",
                                     {"tenant_id": tenant})
        assert status == 200, body
    return client


class Syncer:
    """Incremental /sync for one client, remembering its position."""

    def __init__(self, client: Http) -> None:
        self.client = client
        self.since: str | None = None

    def once(self, timeout_ms: int = 0) -> dict:
        path = f"{V3}/sync?timeout={timeout_ms}" + (f"&since={self.since}" if self.since else "")
        status, body = self.client.request("GET", path)
        assert status == 200, body
        self.since = body["next_batch"]
        return body

    def until(self, predicate, timeout: float = 30.0, what: str = "sync condition"):
        """Sync until predicate(body) is truthy; returns its value."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = predicate(self.once(timeout_ms=1000))
            if found:
                return found
        raise AssertionError(f"timed out waiting for {what}")


def room_events(body: dict, room_id: str, section: str = "timeline") -> list[dict]:
    room = body.get("rooms", {}).get("join", {}).get(room_id, {})
    return room.get(section, {}).get("events", [])


def bodies(client: Http, room_id: str, limit: int = 100) -> list[str]:
    """Message bodies of a room, oldest first, as /messages pages them back."""
    status, page = client.request("GET", f"{V3}/rooms/{room_id}/messages?dir=b&limit={limit}")
    assert status == 200, page
    return [e["content"]["body"] for e in reversed(page["chunk"])
            if e["type"] == "m.room.message" and "body" in e.get("content", {})]
