"""Naming a CA certificate the same way everywhere: the start-up log, `aibridge ca-bundle` and
`aibridge doctor` print its subject and SHA-256 fingerprint, so a person can compare what the
bridge signs with against what a client trusts by reading two lines.

The fingerprint is the SHA-256 of the certificate's DER bytes, upper-case hex in colon-separated
pairs: what `openssl x509 -noout -fingerprint -sha256` prints, and what browsers show.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

CA_KEY_AND_CERT = "mitmproxy-ca.pem"  # what mitmproxy signs with (secret: holds the key)
CA_CERT = "mitmproxy-ca-cert.pem"  # the same certificate, for clients


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


def describe(cert: x509.Certificate) -> str:
    """`CN=mitmproxy,O=mitmproxy (SHA-256 AB:CD:…, valid until 2036-01-01)`."""
    return (f"{subject(cert)} (SHA-256 {fingerprint(cert)}, valid until "
            f"{cert.not_valid_after_utc:%Y-%m-%d})")


def first_cert(path: Path) -> x509.Certificate | None:
    """The first certificate in a PEM file (a key may come before it), or None."""
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())[0]
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class ClientCertFile:
    """What the confdir's client-facing certificate file says about the CA in use."""

    path: Path
    problem: str | None  # None: the file holds exactly the CA in use


def client_cert_file(confdir: Path, in_use: x509.Certificate) -> ClientCertFile:
    """`<confdir>/mitmproxy-ca-cert.pem` is what people hand to clients. mitmproxy writes it only
    for a CA it created, so after a CA was put in place by hand it can be missing or, worse, hold
    an older CA that clients would then trust in vain."""
    path = confdir / CA_CERT
    if not path.exists():
        return ClientCertFile(path, f"{path} does not exist")
    held = first_cert(path)
    if held is None:
        return ClientCertFile(path, f"{path} holds no readable certificate")
    if held != in_use:
        return ClientCertFile(path, f"{path} holds another CA, {describe(held)}")
    return ClientCertFile(path, None)


def startup_lines(confdir: Path, in_use: x509.Certificate) -> tuple[str, str | None]:
    """The start-up log's CA line, and a warning when the client file does not match."""
    confdir = confdir.expanduser().resolve()
    client = client_cert_file(confdir, in_use)
    line = (f"CA {describe(in_use)} from {confdir / CA_KEY_AND_CERT}; clients trust "
            f"{client.path} (or the bundle `aibridge ca-bundle --confdir {confdir}` writes)")
    warning = None
    if client.problem:
        warning = (f"{client.problem}: clients given that file will not trust this bridge; "
                   f"`aibridge ca-bundle --confdir {confdir}` exports the CA in use")
    return line, warning
