"""Bring your own CA: what `aibridge ca-import` accepts, refuses and writes; the trust files."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID
from mitmproxy import certs

from aibridge.observe import ca
from aibridge.ops import cabundle, cli
from aibridge.ops.cabundle import CAError

NOW = datetime.now(UTC)


def make_cert(key, *, ca: bool | None = True, cn: str = "Example Corp Proxy CA",
              issuer: tuple[x509.Name, object] | None = None,
              not_after: datetime = NOW + timedelta(days=365)) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer_name, issuer_key = issuer or (name, key)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(NOW - timedelta(days=1)).not_valid_after(not_after))
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None),
                                        critical=True)
    algorithm = None if isinstance(issuer_key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(issuer_key, algorithm)


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key, password: bytes | None = None, fmt=serialization.PrivateFormat.PKCS8) -> bytes:
    enc = (serialization.BestAvailableEncryption(password) if password
           else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, fmt, enc)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_ca(rsa_key) -> tuple[bytes, bytes]:
    return pem(make_cert(rsa_key)), key_pem(rsa_key)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_import_writes_mitmproxy_files_that_mitmproxy_signs_with(tmp_path, rsa_ca):
    cert, key = rsa_ca
    (tmp_path / "mitmproxy-ca.p12").write_bytes(b"an old CA's key")  # stale: removed
    imported = cabundle.import_ca(tmp_path, cert, key)

    assert imported.subject.rfc4514_string() == "CN=Example Corp Proxy CA"
    assert (tmp_path / "mitmproxy-ca.pem").read_bytes() == key + cert
    assert mode(tmp_path / "mitmproxy-ca.pem") == 0o600
    for name in ("mitmproxy-ca-cert.pem", "mitmproxy-ca-cert.cer"):
        assert (tmp_path / name).read_bytes() == cert
        assert mode(tmp_path / name) == 0o644
    assert not (tmp_path / "mitmproxy-ca.p12").exists()
    # mitmproxy itself loads the files and issues host certificates from the imported CA.
    store = certs.CertStore.from_store(tmp_path, "mitmproxy", 2048)
    leaf = store.get_cert("api.openai.com", []).cert
    assert leaf.issuer == [("CN", "Example Corp Proxy CA")]


def test_ec_ca_with_encrypted_traditional_key_and_issuer_chain(tmp_path):
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = make_cert(root_key, cn="Example Root")
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca = make_cert(ca_key, issuer=(root.subject, root_key))
    encrypted = key_pem(ca_key, b"s3cret", serialization.PrivateFormat.TraditionalOpenSSL)
    assert b"ENCRYPTED" in encrypted

    cabundle.import_ca(tmp_path, pem(ca) + pem(root), encrypted, b"s3cret")
    written = (tmp_path / "mitmproxy-ca.pem").read_bytes()
    assert b"ENCRYPTED" not in written  # mitmproxy gets no passphrase; the file is 0600 instead
    assert written.endswith(pem(ca) + pem(root))  # the chain mitmproxy serves
    assert (tmp_path / "mitmproxy-ca-cert.pem").read_bytes() == pem(ca) + pem(root)


@pytest.mark.parametrize("ca_flag", [False, None], ids=["CA:FALSE", "no basicConstraints"])
def test_refuses_a_certificate_that_is_not_a_ca(tmp_path, rsa_key, ca_flag):
    cert = make_cert(rsa_key, ca=ca_flag, cn="api.example.com")
    with pytest.raises(CAError, match=r"CN=api\.example\.com is not a CA certificate"):
        cabundle.import_ca(tmp_path, pem(cert), key_pem(rsa_key))
    assert list(tmp_path.iterdir()) == []


def test_refuses_a_key_of_another_ca(tmp_path, rsa_ca):
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(CAError, match="private key does not belong to CN=Example Corp Proxy CA"):
        cabundle.import_ca(tmp_path, rsa_ca[0], key_pem(other))


def test_password_errors(tmp_path, rsa_key):
    cert, encrypted = pem(make_cert(rsa_key)), key_pem(rsa_key, b"right")
    with pytest.raises(CAError, match="wrong password"):
        cabundle.import_ca(tmp_path, cert, encrypted, b"wrong")
    with pytest.raises(CAError, match="encrypted; name the environment variable"):
        cabundle.import_ca(tmp_path, cert, encrypted)
    with pytest.raises(CAError, match="not encrypted, but a password was given"):
        cabundle.import_ca(tmp_path, cert, key_pem(rsa_key), b"right")
    assert list(tmp_path.iterdir()) == []


def test_refuses_expired_unreadable_and_unsupported(tmp_path, rsa_key):
    expired = make_cert(rsa_key, not_after=NOW - timedelta(hours=1))
    with pytest.raises(CAError, match="is not valid now"):
        cabundle.import_ca(tmp_path, pem(expired), key_pem(rsa_key))
    with pytest.raises(CAError, match="no PEM certificate"):
        cabundle.import_ca(tmp_path, b"not a cert", key_pem(rsa_key))
    with pytest.raises(CAError, match="no readable PEM private key"):
        cabundle.import_ca(tmp_path, pem(make_cert(rsa_key)), b"not a key")
    ed = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(CAError, match="keys are not supported; use RSA or EC"):
        cabundle.import_ca(tmp_path, pem(make_cert(ed)), key_pem(ed))


def test_existing_different_ca_needs_force(tmp_path, rsa_ca):
    certs.CertStore.from_store(tmp_path, "mitmproxy", 2048)  # the CA mitmproxy made on first start
    before = (tmp_path / "mitmproxy-ca.pem").read_bytes()
    with pytest.raises(CAError, match="already holds O=mitmproxy,CN=mitmproxy; pass --force"):
        cabundle.import_ca(tmp_path, *rsa_ca)
    assert (tmp_path / "mitmproxy-ca.pem").read_bytes() == before

    cabundle.import_ca(tmp_path, *rsa_ca, force=True)
    assert (tmp_path / "mitmproxy-ca-cert.pem").read_bytes() == rsa_ca[0]
    assert not (tmp_path / "mitmproxy-ca-cert.p12").exists()
    cabundle.import_ca(tmp_path, *rsa_ca)  # the same CA again: nothing to protect


def test_strict_client_problems(rsa_key):
    ski = x509.SubjectKeyIdentifier.from_public_key(rsa_key.public_key())
    usage = x509.KeyUsage(digital_signature=False, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          key_cert_sign=True, crl_sign=True, encipher_only=False,
                          decipher_only=False)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Strict CA")])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(rsa_key.public_key()).serial_number(1)
               .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=1))
               .add_extension(ski, critical=False).add_extension(usage, critical=True))
    strict = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None),
                                   critical=True).sign(rsa_key, hashes.SHA256())
    assert cabundle.strict_client_problems(strict) == []
    lax = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None),
                                critical=False).sign(rsa_key, hashes.SHA256())
    assert cabundle.strict_client_problems(lax) == ["basicConstraints not marked critical"]


def test_hand_placed_ca_is_exported_for_clients(tmp_path, rsa_ca):
    cert, key = rsa_ca
    (tmp_path / "mitmproxy-ca.pem").write_bytes(key + cert)
    files = cabundle.write_trust_files(tmp_path)
    assert (tmp_path / "mitmproxy-ca-cert.pem").read_bytes() == cert
    assert files.ca == tmp_path / "aibridge-ca.pem" and files.ca.read_bytes() == cert
    system = cabundle.system_bundle()
    assert system is not None
    assert files.bundle == tmp_path / "aibridge-bundle.pem"
    assert files.bundle.read_text().startswith(system.read_text())
    assert files.bundle.read_text().endswith(cert.decode())


def test_cli_import_with_password_env(tmp_path, rsa_key, monkeypatch, capsys):
    cert_file, key_file = tmp_path / "ca.pem", tmp_path / "ca.key"
    cert_file.write_bytes(pem(make_cert(rsa_key)))
    key_file.write_bytes(key_pem(rsa_key, b"pw"))
    confdir = tmp_path / "certs"
    argv = ["ca-import", "--cert", str(cert_file), "--key", str(key_file),
            "--confdir", str(confdir), "--key-password-env", "CA_KEY_PW"]

    monkeypatch.delenv("CA_KEY_PW", raising=False)
    assert cli.main(argv) == 1
    assert "$CA_KEY_PW is not set" in capsys.readouterr().err
    assert not confdir.exists()

    monkeypatch.setenv("CA_KEY_PW", "pw")
    assert cli.main(argv) == 0
    out, err = capsys.readouterr()
    # make_cert's CA lacks what VERIFY_X509_STRICT wants: imported, with a warning.
    assert "warning: the CA has no subjectKeyIdentifier extension; no keyUsage extension" in err
    assert mode(confdir) == 0o700
    assert f"SSL_CERT_FILE={confdir / 'aibridge-bundle.pem'}" in out
    assert f"CODEX_CA_CERTIFICATE={confdir / 'aibridge-bundle.pem'}" in out
    assert f"NODE_EXTRA_CA_CERTS={confdir / 'aibridge-ca.pem'}" in out

    monkeypatch.setenv("CA_KEY_PW", "nope")
    assert cli.main(argv) == 1
    assert "wrong password" in capsys.readouterr().err


def test_cli_ca_bundle_shares_the_trust_files(tmp_path, capsys):
    certs.CertStore.from_store(tmp_path, "mitmproxy", 2048)  # as the bridge's first start does
    assert cli.main(["ca-bundle", "--confdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"REQUESTS_CA_BUNDLE={tmp_path / 'aibridge-bundle.pem'}" in out
    assert f"NODE_EXTRA_CA_CERTS={tmp_path / 'aibridge-ca.pem'}" in out
    assert (tmp_path / "aibridge-ca.pem").read_bytes() == \
        (tmp_path / "mitmproxy-ca-cert.pem").read_bytes()
    cert = x509.load_pem_x509_certificate((tmp_path / "mitmproxy-ca-cert.pem").read_bytes())
    assert f"SHA-256 {ca.fingerprint(cert)}" in out
    assert f"read from {tmp_path / 'mitmproxy-ca.pem'}" in out


@pytest.mark.parametrize("exists", [True, False])
def test_cli_ca_bundle_refuses_a_confdir_without_a_ca(tmp_path, capsys, exists):
    confdir = tmp_path / "certs"
    if exists:
        confdir.mkdir()
    assert cli.main(["ca-bundle", "--confdir", str(confdir)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert f"no CA in {confdir}" in err
    assert f"--set confdir={confdir}" in err and "Start the bridge once" in err
    assert "ca-import" in err
    assert ("does not exist" in err) is not exists
    # Nothing was minted: the bridge would not sign with it.
    assert not (confdir / "mitmproxy-ca.pem").exists()
    assert not (confdir / "mitmproxy-ca-cert.pem").exists()


def test_ca_bundle_exports_the_ca_mitmproxy_signs_with_over_a_stale_copy(tmp_path, rsa_ca):
    certs.CertStore.from_store(tmp_path, "mitmproxy", 2048)
    old = (tmp_path / "mitmproxy-ca-cert.pem").read_bytes()
    cert, key = rsa_ca
    (tmp_path / "mitmproxy-ca.pem").write_bytes(key + cert)  # replaced by hand
    files = cabundle.write_trust_files(tmp_path)
    assert files.cert == x509.load_pem_x509_certificate(cert)
    assert (tmp_path / "mitmproxy-ca-cert.pem").read_bytes() == cert != old
    assert files.bundle.read_text().endswith(cert.decode())
    assert len(files.notes) == 1 and "held another CA" in files.notes[0]


def test_the_client_copy_is_used_where_there_is_no_key_file(tmp_path, rsa_ca):
    cert, _ = rsa_ca  # e.g. a client machine given the certificate only
    (tmp_path / "mitmproxy-ca-cert.pem").write_bytes(cert)
    files = cabundle.write_trust_files(tmp_path)
    assert files.source == tmp_path / "mitmproxy-ca-cert.pem"
    assert files.ca.read_bytes() == cert


def test_startup_lines_warn_when_the_client_copy_is_not_the_ca_in_use(tmp_path, rsa_key):
    in_use, other = make_cert(rsa_key), make_cert(rsa_key, cn="Old CA")
    line, warning = ca.startup_lines(tmp_path, in_use)
    assert ca.fingerprint(in_use) in line and str(tmp_path / "mitmproxy-ca.pem") in line
    assert warning is not None and "does not exist" in warning
    (tmp_path / "mitmproxy-ca-cert.pem").write_bytes(pem(other))
    _, warning = ca.startup_lines(tmp_path, in_use)
    assert warning is not None and "Old CA" in warning and ca.fingerprint(other) in warning
    (tmp_path / "mitmproxy-ca-cert.pem").write_bytes(pem(in_use))
    assert ca.startup_lines(tmp_path, in_use)[1] is None


def test_fingerprint_is_what_openssl_prints(rsa_key):
    cert = make_cert(rsa_key)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(cert.public_bytes(serialization.Encoding.DER))
    assert ca.fingerprint(cert) == ":".join(f"{b:02X}" for b in digest.finalize())
