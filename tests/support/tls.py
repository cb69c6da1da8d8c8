"""TLS for tests: a self-signed certificate for the name `localhost` (and no IP address), a
server context that records the names clients ask for (SNI), and trust in it for clients
that use the system's trust store (ssl.create_default_context reads SSL_CERT_FILE)."""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NAME = "localhost"


@dataclass
class LocalhostTls:
    certificate: Path
    context: ssl.SSLContext  # the server's
    names: list[str | None] = field(default_factory=list)  # SNI of each handshake


def localhost_tls(folder: Path) -> LocalhostTls:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(NAME)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "localhost.pem", folder / "localhost.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    tls = LocalhostTls(cert_path, context)
    context.sni_callback = lambda _sock, name, _ctx: tls.names.append(name)  # type: ignore[assignment, misc]
    return tls


@pytest.fixture(name="localhost_tls")
def localhost_tls_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalhostTls:
    """The certificate, trusted by every client context made during the test."""
    tls = localhost_tls(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.certificate))
    return tls
