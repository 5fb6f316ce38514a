"""TLS for federation: the listener's certificate (a self-signed one generated on first
start unless one is configured) and how outbound connections verify peers.

Verification uses the platform's trust store plus `federation.trusted_certificates`
(a private CA, or a peer's self-signed certificate: ours are generated as their own CA
so they can be trusted directly). `federation.insecure_skip_verify_hosts` turns
verification off for the listed server names; it exists for tests on loopback."""
from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet._sslverify import IOpenSSLTrustRoot  # not re-exported by twisted.internet.ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from zope.interface import implementer

from homeserver.config import Config

CERT_FILE = "federation.crt"
KEY_FILE = "federation.key"


def host_of(server_name: str) -> str:
    """The host part of a server name (`example.org`, `1.2.3.4`, `[::1]`), no port."""
    if server_name.startswith("["):
        return server_name[1:server_name.index("]")]
    return server_name.rsplit(":", 1)[0] if server_name.count(":") == 1 else server_name


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def generate_self_signed(host: str, cert_path: Path, key_path: Path, days: int = 3650) -> None:
    """A self-signed certificate for `host` (DNS name or IP address) that is also its own
    CA, so a peer can list it in trusted_certificates. The key file is private (0600)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host[:64])])
    san: x509.GeneralName = (x509.IPAddress(ipaddress.ip_address(host)) if is_ip_literal(host)
                             else x509.DNSName(host))
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = key_path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.replace(tmp, key_path)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def certificate_paths(config: Config) -> tuple[Path, Path]:
    """The listener's (certificate, key) files; the default pair is generated once."""
    fed = config.federation
    cert = fed.tls_certificate_path or config.data_dir / CERT_FILE
    key = fed.tls_private_key_path or config.data_dir / KEY_FILE
    if fed.tls_certificate_path is None and fed.tls_private_key_path is None \
            and not (cert.exists() and key.exists()):
        generate_self_signed(host_of(config.server_name), cert, key)
    return cert, key


def server_tls_options(cert_path: Path, key_path: Path) -> ssl.CertificateOptions:
    pem = cert_path.read_bytes() + b"\n" + key_path.read_bytes()
    return ssl.PrivateCertificate.loadPEM(pem).options()


@implementer(IOpenSSLTrustRoot)
class _PlatformPlus:
    """The platform's CAs plus extra certificates."""

    def __init__(self, extra: list[crypto.X509]) -> None:
        self._extra = extra

    def _addCACertsToContext(self, context: SSL.Context) -> None:
        context.set_default_verify_paths()
        store = context.get_cert_store()
        for cert in self._extra:
            store.add_cert(cert)


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified:
    """TLS without certificate checks (test-only hosts); still sends SNI."""

    def __init__(self, hostname: str) -> None:
        self._hostname = hostname
        self._context = ssl.CertificateOptions(verify=False).getContext()

    def clientConnectionForTLS(self, tls_protocol):
        conn = SSL.Connection(self._context, None)
        conn.set_app_data(tls_protocol)
        if not is_ip_literal(self._hostname):
            conn.set_tlsext_host_name(self._hostname.encode("idna"))
        conn.set_connect_state()
        return conn


def _load_certificates(paths: list[Path]) -> list[crypto.X509]:
    certs = []
    for path in paths:
        data = path.read_bytes()
        for block in data.split(b"-----END CERTIFICATE-----"):
            if b"-----BEGIN CERTIFICATE-----" in block:
                certs.append(crypto.load_certificate(crypto.FILETYPE_PEM,
                                                     block + b"-----END CERTIFICATE-----\n"))
    return certs


class ClientTls:
    """Connection creators for outbound TLS, by the name the certificate must carry."""

    def __init__(self, config: Config) -> None:
        fed = config.federation
        self._verify = fed.verify_certificates
        self._skip = set(fed.insecure_skip_verify_hosts)
        self._trust = _PlatformPlus(_load_certificates(fed.trusted_certificates))

    def creator(self, tls_name: str, server_name: str | None = None):
        host = tls_name.strip("[]")
        if not self._verify or tls_name in self._skip or (server_name in self._skip):
            return _Unverified(host)
        return ssl.optionsForClientTLS(host, trustRoot=self._trust)
