"""The bridge CA and the trust files clients need.

The CA lives in mitmproxy's confdir (`~/.mitmproxy` unless the bridge runs with
`--set confdir=…`; the `aibridge` commands default to `certs/`, the README's choice, and must be
given the bridge's confdir). Either mitmproxy creates it on first start, or `import_ca` installs
a company's own CA in the form mitmproxy reads: key + certificate in `mitmproxy-ca.pem`, which it
loads as it is (it never writes the `-cert.pem` variants for a CA it did not create, so those are
exported here). Nothing here creates a CA: a second CA made by a helper command is the classic
way to end up with clients that trust the wrong one.

Clients that replace their trust store with a file (`SSL_CERT_FILE` for the Python SDKs,
`REQUESTS_CA_BUNDLE`, `CODEX_CA_CERTIFICATE`) must still trust every tunnelled host's real
certificate, so the bridge CA is appended to the system bundle rather than used alone.
`NODE_EXTRA_CA_CERTS` adds to Node's own roots, so it gets the bridge CA only.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from aibridge.observe import ca as ca_names

SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/cert.pem",  # macOS, BSDs
)
CA_KEY_AND_CERT = ca_names.CA_KEY_AND_CERT  # secret: what mitmproxy signs with
CA_CERT = ca_names.CA_CERT
CA_CER = "mitmproxy-ca-cert.cer"  # same bytes; the name Android & co. want
BUNDLE = "aibridge-bundle.pem"  # system CAs + bridge CA: SSL_CERT_FILE, REQUESTS_CA_BUNDLE, Codex
CA_ONLY = "aibridge-ca.pem"  # bridge CA alone: NODE_EXTRA_CA_CERTS
# Written by mitmproxy for a CA it created; after an import they would hold the old CA (the
# `mitmproxy-ca.p12` even its private key), so they are removed rather than left stale.
STALE_AFTER_IMPORT = ("mitmproxy-ca.p12", "mitmproxy-ca-cert.p12")

CAKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class CAError(ValueError):
    """A CA that cannot be used; the message is meant for the person running the command."""


@dataclass(frozen=True)
class TrustFiles:
    bundle: Path  # system CAs + bridge CA
    ca: Path  # bridge CA only
    cert: x509.Certificate  # the bridge CA they hold
    source: Path  # the confdir file it was read from
    notes: tuple[str, ...] = ()


def system_bundle() -> Path | None:
    candidates = [ssl.get_default_verify_paths().cafile, *SYSTEM_BUNDLES]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    try:
        import certifi  # installed with mitmproxy
    except ImportError:
        return None
    return Path(certifi.where())


def bridge_ca(confdir: Path) -> tuple[list[x509.Certificate], Path, list[str]]:
    """The CA the bridge signs with, as mitmproxy loads it from `confdir`: the certificates of
    `mitmproxy-ca.pem` (CA first, then any issuers), the file they came from, and notes for the
    person running the command.

    Never creates a CA: one made here would not be the one a bridge started with another confdir
    signs with, and clients would trust it in vain. The client copy `mitmproxy-ca-cert.pem` is
    re-exported when it is missing or stale (a CA put in place by hand); it is read instead of
    the key file only where that file cannot be read (a client machine given the certificate,
    or a user who may not read the bridge's key).
    """
    confdir = confdir.expanduser()
    key_and_cert, cert_file = confdir / CA_KEY_AND_CERT, confdir / CA_CERT
    notes: list[str] = []
    try:
        data = key_and_cert.read_bytes()
    except FileNotFoundError:
        data = None
    except PermissionError:
        data = None
        notes.append(f"{key_and_cert} is not readable by this user; using the certificate in "
                     f"{cert_file}")
    if data is not None:
        chain = _certs_in(key_and_cert, data)
        exported = _certs_or_none(cert_file)
        if exported is None or exported[0] != chain[0]:
            _write_certs(confdir, _pem(chain))
            if exported is not None:
                notes.append(f"{cert_file} held another CA ({ca_names.describe(exported[0])}); "
                             "replaced it with the CA the bridge signs with")
        return chain, key_and_cert, notes
    if cert_file.exists():
        return _certs_in(cert_file, cert_file.read_bytes()), cert_file, notes
    raise CAError(no_ca_message(confdir))


def no_ca_message(confdir: Path) -> str:
    where = confdir.expanduser().resolve()
    state = "" if where.is_dir() else " (the directory does not exist)"
    message = (f"no CA in {where}{state}: {CA_KEY_AND_CERT} is missing. This command does not "
               "create one: the bridge would sign with a different CA than the one clients "
               "trust. Start the bridge once with this confdir (mitmdump -s addon/bridge.py "
               f"--set confdir={where} ...; mitmproxy creates its CA there on the first start) "
               f"or install your own CA with `aibridge ca-import --confdir {where} ...`, then "
               "run this again with the same --confdir")
    default = Path("~/.mitmproxy").expanduser()
    if where != default.resolve() and (default / CA_KEY_AND_CERT).exists():
        message += (f". Note: {default} (mitmproxy's default confdir, used when the bridge is "
                    "started without --set confdir) holds a CA: if your bridge runs that way, "
                    f"pass --confdir {default}")
    return message


def write_trust_files(confdir: Path, bundle: Path | None = None) -> TrustFiles:
    """Write the system+CA bundle (default `<confdir>/aibridge-bundle.pem`) and the CA-only file.
    Raises CAError when the confdir holds no CA."""
    confdir = confdir.expanduser()
    chain, source, notes = bridge_ca(confdir)
    ca = _pem(chain).decode()
    system = system_bundle()
    parts = [system.read_text()] if system else []
    out = (bundle or confdir / BUNDLE).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(p if p.endswith("\n") else p + "\n" for p in [*parts, ca]))
    ca_only = confdir / CA_ONLY
    ca_only.write_text(ca)
    return TrustFiles(bundle=out, ca=ca_only, cert=chain[0], source=source, notes=tuple(notes))


def write_bundle(confdir: Path, out: Path) -> Path:
    return write_trust_files(confdir, out).bundle


def export_lines(files: TrustFiles) -> list[str]:
    """What clients set; printed by `ca-bundle` and `ca-import`."""
    bundle, ca = files.bundle.resolve(), files.ca.resolve()
    return [
        f"# bridge CA {ca_names.describe(files.cert)}",
        f"#   read from {files.source.resolve()}",
        f"export SSL_CERT_FILE={bundle}        # Python SDKs (httpx2)",
        f"export REQUESTS_CA_BUNDLE={bundle}   # requests",
        f"export CODEX_CA_CERTIFICATE={bundle} # Codex",
        f"export NODE_EXTRA_CA_CERTS={ca} # Node, Claude Code (adds a CA)",
        f"curl --cacert {bundle} ...",
    ]


# -- bring your own CA ---------------------------------------------------------------------------


def load_ca(cert_pem: bytes, key_pem: bytes, password: bytes | None = None,
            now: datetime | None = None) -> tuple[CAKey, list[x509.Certificate]]:
    """Check that `cert_pem` (CA first, then any issuers) and `key_pem` make a usable CA.

    Everything is checked before anything is written, so a failed import changes nothing.
    """
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise CAError("the certificate file holds no PEM certificate") from None
    ca = chain[0]
    name = ca.subject.rfc4514_string()
    try:
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise CAError(f"{name} is not a CA certificate (basicConstraints CA:TRUE is missing); "
                      "mitmproxy signs a certificate for every host with it")
    try:
        usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not usage.key_cert_sign:
        raise CAError(f"{name} may not sign certificates (keyUsage lacks keyCertSign)")
    now = now or datetime.now(UTC)
    if not ca.not_valid_before_utc <= now <= ca.not_valid_after_utc:
        raise CAError(f"{name} is not valid now (valid {ca.not_valid_before_utc:%Y-%m-%d} to "
                      f"{ca.not_valid_after_utc:%Y-%m-%d})")
    key = _load_key(key_pem, password)
    if _spki(key.public_key()) != _spki(ca.public_key()):
        raise CAError(f"the private key does not belong to {name}")
    return key, chain


def strict_client_problems(ca: x509.Certificate) -> list[str]:
    """What makes clients with strict X.509 checks reject the hosts' certificates.

    Python >= 3.13's default context sets VERIFY_X509_STRICT, under which OpenSSL wants RFC 5280
    CA certificates. mitmproxy signs with such a CA fine, so these are warnings, not refusals.
    """
    exts = {type(e.value): e for e in ca.extensions}
    problems = []
    if x509.SubjectKeyIdentifier not in exts:
        problems.append("no subjectKeyIdentifier extension")
    if x509.KeyUsage not in exts:
        problems.append("no keyUsage extension")
    if x509.BasicConstraints in exts and not exts[x509.BasicConstraints].critical:
        problems.append("basicConstraints not marked critical")
    return problems


def import_ca(confdir: Path, cert_pem: bytes, key_pem: bytes, password: bytes | None = None,
              *, force: bool = False) -> x509.Certificate:
    """Install an own CA into `confdir` in mitmproxy's form; returns the CA certificate."""
    key, chain = load_ca(cert_pem, key_pem, password)
    confdir = confdir.expanduser()
    target = confdir / CA_KEY_AND_CERT
    if target.exists() and not force:
        current = _first_cert(target)
        if current is None or current != chain[0]:
            what = current.subject.rfc4514_string() if current else "an unreadable CA"
            raise CAError(f"{target} already holds {what}; pass --force to replace it "
                          "(clients that trust the old CA will then have to trust the new one)")
    _make_confdir(confdir)
    # Unencrypted, like a CA mitmproxy makes itself, so no passphrase needs to reach mitmproxy's
    # options (which mitmweb shows); the file is created 0600 and never exists with wider modes.
    key_pem_out = key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    _atomic_write(target, key_pem_out + _pem(chain), 0o600)
    _write_certs(confdir, _pem(chain))
    for name in STALE_AFTER_IMPORT:
        (confdir / name).unlink(missing_ok=True)
    return chain[0]


def _load_key(key_pem: bytes, password: bytes | None) -> CAKey:
    try:
        key = serialization.load_pem_private_key(key_pem, password)
    except TypeError:  # cryptography's way of saying "encrypted" or "not encrypted"
        if password is None:
            raise CAError("the private key is encrypted; name the environment variable that "
                          "holds its password with --key-password-env") from None
        raise CAError("the private key is not encrypted, but a password was given") from None
    except ValueError:
        if password is not None and b"ENCRYPTED" in key_pem:
            raise CAError("cannot decrypt the private key: wrong password?") from None
        raise CAError("the key file holds no readable PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CAError(f"{type(key).__name__.lstrip('_')} keys are not supported; use RSA or EC")
    return key


def _spki(public_key: CertificatePublicKeyTypes) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def _first_cert(path: Path) -> x509.Certificate | None:
    return ca_names.first_cert(path)


def _certs_or_none(path: Path) -> list[x509.Certificate] | None:
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError):
        return None


def _certs_in(path: Path, data: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CAError(f"{path} holds no PEM certificate") from None


def _pem(chain: list[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)


def _write_certs(confdir: Path, pem: bytes) -> None:
    for name in (CA_CERT, CA_CER):
        _atomic_write(confdir / name, pem, 0o644)


def _make_confdir(confdir: Path) -> None:
    # New confdirs are private: they hold the CA's key.
    confdir.mkdir(mode=0o700, parents=True, exist_ok=True)


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    """Replace `path` in one step, so a running import never leaves half a CA behind."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
