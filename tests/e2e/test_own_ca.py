"""Bring your own CA: a company CA imported by `scripts/ca-import` is what the bridge signs with."""

from __future__ import annotations

import os
import ssl
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import openai
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.e2e.harness import ACTORS_TOML, OPENAI_KEY, ROOT, BridgeProcess, provider_config
from tests.fakeprovider import FakeProvider

CA_NAME = "Example Corp TLS Inspection CA"
KEY_PASSWORD = "correct horse battery staple"


def make_company_ca(directory: Path) -> tuple[Path, Path]:
    """A CA as a company PKI would hand it over: certificate PEM + encrypted key PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Example Corp"),
                      x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            # Python >= 3.13 clients verify strictly: a CA without one is rejected.
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "corp-ca.pem", directory / "corp-ca.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(KEY_PASSWORD.encode())))
    return cert_path, key_path


@pytest.fixture
def own_ca_bridge(fake: FakeProvider, tmp_path: Path) -> Iterator[tuple[BridgeProcess, Path]]:
    cert, key = make_company_ca(tmp_path)
    workdir = tmp_path / "bridge"
    bridge = BridgeProcess(workdir, provider_config(fake.url))
    (workdir / "actors.toml").write_text(ACTORS_TOML)
    result = subprocess.run(
        [str(ROOT / "scripts" / "ca-import"), "--cert", str(cert), "--key", str(key),
         "--confdir", str(bridge.confdir), "--key-password-env", "CORP_CA_KEY_PASSWORD"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "CORP_CA_KEY_PASSWORD": KEY_PASSWORD})
    assert result.returncode == 0, result.stderr
    assert KEY_PASSWORD not in result.stdout + result.stderr
    assert "warning" not in result.stderr  # a CA that strict (Python >= 3.13) clients accept
    assert f"CODEX_CA_CERTIFICATE={bridge.confdir / 'aibridge-bundle.pem'}" in result.stdout
    assert f"NODE_EXTRA_CA_CERTS={bridge.confdir / 'aibridge-ca.pem'}" in result.stdout
    try:
        yield bridge.start(), cert
    finally:
        bridge.stop()


def test_sdk_trusting_only_the_imported_ca_works_through_the_bridge(own_ca_bridge, fake):
    bridge, ca_cert = own_ca_bridge
    imported = (bridge.confdir / "mitmproxy-ca.pem").read_bytes()
    ctx = ssl.create_default_context(cafile=str(ca_cert))  # the company CA and nothing else
    client = openai.OpenAI(api_key="sk-user-placeholder", max_retries=0,
                           http_client=openai.DefaultHttpxClient(proxy=bridge.proxy_url(),
                                                                 verify=ctx))
    chat = client.chat.completions.create(model="gpt-4o",
                                          messages=[{"role": "user", "content": "hi"}])
    assert chat.choices[0].message.content == "Hello from fake"
    assert fake.requests[-1].header("Authorization") == f"Bearer {OPENAI_KEY}"

    # The certificate the client was shown for api.openai.com was issued by the imported CA.
    sock, head = bridge.connect("api.openai.com", 443)
    assert head.startswith(b"HTTP/1.1 200"), head
    with ctx.wrap_socket(sock, server_hostname="api.openai.com") as tls:
        peer = tls.getpeercert()
    issuer = dict(x[0] for x in peer["issuer"])
    assert issuer == {"organizationName": "Example Corp", "commonName": CA_NAME}
    assert ("DNS", "api.openai.com") in peer["subjectAltName"]
    # mitmproxy used the imported CA as it was and did not make one of its own.
    assert (bridge.confdir / "mitmproxy-ca.pem").read_bytes() == imported
