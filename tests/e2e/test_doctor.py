"""`aibridge doctor` against a real mitmdump: a set-up that works passes every check; a wrong CA
bundle, a wrong token, an unreachable proxy and a host the bridge does not decrypt each stop it
with a non-zero exit, the failed check and how to fix it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from mitmproxy import certs

from aibridge.observe import ca
from aibridge.ops.doctor import parse_proxy
from tests.e2e.harness import ALICE_TOKEN, ANTHROPIC_KEY, OPENAI_KEY, ROOT, provider_config

AIBRIDGE = Path(sys.executable).with_name("aibridge")
CLEARED = ("PROXY", "CA_CERT", "SSL_CERT", "CA_BUNDLE", "CA_CERTIFICATE")


def doctor(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not any(part in k.upper() for part in CLEARED)}
    result = subprocess.run([str(AIBRIDGE), "doctor", "--timeout", "10", *args],
                            capture_output=True, text=True, env={**base, **env}, timeout=120)
    output = result.stdout + result.stderr
    for secret in (ALICE_TOKEN, OPENAI_KEY, ANTHROPIC_KEY):
        assert secret not in output  # the token and keys are only ever masked
    return result


def failed_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stdout.splitlines()
    failed = [i for i, line in enumerate(lines) if line.startswith("✗")]
    assert len(failed) == 1, result.stdout
    assert lines[failed[0] + 1].startswith("    fix: "), result.stdout
    assert failed[0] + 2 == len(lines), "it stops at the first failure"
    return lines[failed[0]] + "\n" + lines[failed[0] + 1]


@pytest.fixture(scope="module")
def trust(bridge) -> tuple[Path, Path]:
    """The README's client set-up: the files `scripts/ca-bundle` writes."""
    subprocess.run([str(ROOT / "scripts" / "ca-bundle"), "--confdir", str(bridge.confdir)],
                   capture_output=True, text=True, timeout=60, check=True)
    return bridge.confdir / "aibridge-bundle.pem", bridge.confdir / "aibridge-ca.pem"


@pytest.fixture(scope="module")
def bridge_fingerprint(bridge) -> str:
    return ca.fingerprint(x509.load_pem_x509_certificate(Path(bridge.ca).read_bytes()))


def test_a_working_setup_passes_every_check(bridge, trust, bridge_fingerprint):
    bundle, ca_only = trust
    result = doctor(env={"HTTPS_PROXY": bridge.proxy_url(), "SSL_CERT_FILE": str(bundle),
                         "NODE_EXTRA_CA_CERTS": str(ca_only)})
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert all(line[0] in "✓-" for line in out.splitlines()), out
    for expected in ("✓ proxy reachable: TCP connect to 127.0.0.1:",
                     "✓ token accepted: CONNECT api.openai.com:443 -> 200",
                     f"✓ bridge CA: api.openai.com is served a certificate issued by "
                     f"O=mitmproxy,CN=mitmproxy, SHA-256 {bridge_fingerprint}",
                     f"✓ SSL_CERT_FILE={bundle}: trusts the bridge CA",
                     f"✓ NODE_EXTRA_CA_CERTS={ca_only}: trusts the bridge CA",
                     "- REQUESTS_CA_BUNDLE: not set",
                     "✓ decrypted api.openai.com:", "✓ decrypted api.anthropic.com:",
                     "✓ decrypted chatgpt.com:",
                     "✓ central keys: openai 1 of 1 usable, anthropic 1 of 1 usable",
                     "✓ bridge ready: yes"):
        assert expected in out, out
    assert "alic...1234" in out  # the token, masked


def test_a_bundle_of_another_ca_fails_naming_the_variable_and_both_fingerprints(
        bridge, tmp_path, bridge_fingerprint):
    # The classic mistake: ca-bundle run against another confdir, whose CA has the same name.
    certs.CertStore.from_store(tmp_path / "other", "mitmproxy", 2048)
    other = tmp_path / "other" / "mitmproxy-ca-cert.pem"
    other_fingerprint = ca.fingerprint(x509.load_pem_x509_certificate(other.read_bytes()))
    result = doctor(env={"HTTPS_PROXY": bridge.proxy_url(), "REQUESTS_CA_BUNDLE": str(other)})
    assert result.returncode == 1
    line = failed_line(result)
    assert line.startswith(f"✗ REQUESTS_CA_BUNDLE={other}: does not trust the bridge CA"), line
    assert bridge_fingerprint in line and other_fingerprint in line
    assert "aibridge ca-bundle --confdir" in line and "aibridge-bundle.pem" in line


def test_a_wrong_token_fails_at_the_token(bridge, trust):
    wrong = "not-the-token-42"
    result = doctor("--proxy", bridge.proxy_url(token=wrong),
                    env={"SSL_CERT_FILE": str(trust[0])})
    assert result.returncode == 1
    line = failed_line(result)
    assert line.startswith("✗ token accepted: the bridge refused the token"), line
    assert "407" in line and wrong not in result.stdout


def test_no_credentials_where_the_bridge_wants_them(bridge):
    result = doctor("--proxy", f"http://127.0.0.1:{bridge.port}", env={})
    assert result.returncode == 1
    assert "wants proxy credentials (407)" in failed_line(result)


def test_an_unreachable_proxy_fails_at_the_connection():
    with socket.socket() as s:  # bound but not listening: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        result = doctor(env={"HTTPS_PROXY": f"http://dev:{ALICE_TOKEN}@127.0.0.1:{port}"})
    assert result.returncode == 1
    line = failed_line(result)
    assert line.startswith(f"✗ proxy reachable: cannot connect to 127.0.0.1:{port}: nothing "
                           "listens there"), line
    assert "start the bridge" in line


def test_no_proxy_set_at_all():
    result = doctor(env={})
    assert result.returncode == 1
    assert failed_line(result).startswith("✗ proxy URL: no --proxy given and HTTPS_PROXY is not")


def test_a_host_the_bridge_tunnels_is_not_decrypted(bridge, trust):
    # localhost:443 is not a provider host: the bridge tunnels it (and nothing listens there).
    result = doctor("--host", "api.openai.com", "--host", "localhost",
                    env={"HTTPS_PROXY": bridge.proxy_url(), "SSL_CERT_FILE": str(trust[0])})
    assert result.returncode == 1
    assert "✓ decrypted api.openai.com" in result.stdout
    line = failed_line(result)
    assert line.startswith("✗ decrypted localhost: no TLS from the bridge"), line


def test_no_proxy_bypassing_a_provider_host_is_reported(bridge, trust):
    result = doctor(env={"HTTPS_PROXY": bridge.proxy_url(), "SSL_CERT_FILE": str(trust[0]),
                         "NO_PROXY": "localhost,.openai.com"})
    assert result.returncode == 1
    line = failed_line(result)
    assert line.startswith("✗ NO_PROXY: NO_PROXY=localhost,.openai.com makes clients bypass "
                           "the bridge for api.openai.com"), line


@pytest.mark.parametrize(("text", "host", "port", "user", "token"), [
    ("http://me:tok%40en@bridge:8080", "bridge", 8080, "me", "tok@en"),
    ("http://TOKEN@bridge:8080", "bridge", 8080, "", "TOKEN"),
    ("bridge.example.com:3128", "bridge.example.com", 3128, "", None),
    ("http://[::1]:8080/", "::1", 8080, "", None),
])
def test_parse_proxy(text, host, port, user, token):
    proxy = parse_proxy(text, "HTTPS_PROXY")
    assert (proxy.host, proxy.port, proxy.user, proxy.token) == (host, port, user, token)


@pytest.mark.parametrize("text", ["https://bridge:8080", "http://:8080", "http://b:99999"])
def test_parse_proxy_refuses(text):
    with pytest.raises(ValueError):
        parse_proxy(text, "HTTPS_PROXY")


def test_without_actors_the_public_summary_is_enough(fake, make_bridge, tmp_path):
    bridge = make_bridge(provider_config(fake.url, actors=False), actors=None)
    subprocess.run([str(ROOT / "scripts" / "ca-bundle"), "--confdir", str(bridge.confdir)],
                   capture_output=True, text=True, timeout=60, check=True)
    bundle = bridge.confdir / "aibridge-bundle.pem"
    result = doctor(env={"HTTPS_PROXY": f"http://127.0.0.1:{bridge.port}",
                         "SSL_CERT_FILE": str(bundle)})
    assert result.returncode == 0, result.stdout
    fingerprint = ca.fingerprint(x509.load_pem_x509_certificate(Path(bridge.ca).read_bytes()))
    assert "public summary" in result.stdout
    assert fingerprint in result.stdout  # found in the client's own bundle
    assert "✓ central keys: openai 1 of 1 usable" in result.stdout
    # A wrong bundle: the bridge CA is then named by its issuer name and key id.
    certs.CertStore.from_store(tmp_path / "other", "mitmproxy", 2048)
    result = doctor(env={"HTTPS_PROXY": f"http://127.0.0.1:{bridge.port}",
                         "SSL_CERT_FILE": str(tmp_path / "other" / "mitmproxy-ca-cert.pem")})
    assert result.returncode == 1
    assert "key id" in failed_line(result)
