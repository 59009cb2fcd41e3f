"""Trust bundles for clients: the system's CAs plus the bridge's CA.

Clients that replace their trust store with a file (`SSL_CERT_FILE` for the Python SDKs,
`REQUESTS_CA_BUNDLE`, `CODEX_CA_CERTIFICATE`) must still trust every tunnelled host's real
certificate, so the bridge CA is appended to the system bundle rather than used alone.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from mitmproxy import certs

SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/cert.pem",  # macOS, BSDs
)
CA_CERT = "mitmproxy-ca-cert.pem"


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


def ensure_ca(confdir: Path) -> Path:
    """The bridge CA certificate, created the way mitmproxy would on first start."""
    confdir = confdir.expanduser()
    if not (confdir / CA_CERT).exists():
        confdir.mkdir(parents=True, exist_ok=True)
        certs.CertStore.from_store(confdir, "mitmproxy", 2048)
    return confdir / CA_CERT


def write_bundle(confdir: Path, out: Path) -> Path:
    ca = ensure_ca(confdir).read_text()
    system = system_bundle()
    parts = [system.read_text()] if system else []
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(p if p.endswith("\n") else p + "\n" for p in [*parts, ca]))
    return out
