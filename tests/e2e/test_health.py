"""The health endpoint through a real mitmdump: straight to the listen port (what load balancers
and Kubernetes probes send) or through the proxy for `aibridge.health`, no proxy credentials
needed; without an actor's credentials it says ready or not and counts, nothing else."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from aibridge.observe import ca
from tests.e2e.harness import ALICE_TOKEN, ANTHROPIC_KEY, OPENAI_KEY, provider_config

OPENAI_HINT = "sk-c...cdef"  # the masked hint of OPENAI_KEY


def curl(*args: str, timeout: float = 30) -> tuple[int, str]:
    result = subprocess.run(["curl", "-sS", "--max-time", str(int(timeout)), "-w",
                             "\n%{http_code}", *args], capture_output=True, text=True,
                            timeout=timeout + 5)
    body, _, status = result.stdout.rpartition("\n")
    assert status.isdigit(), result.stderr
    return int(status), body


def direct(bridge, path: str = "/healthz", *args: str) -> tuple[int, str]:
    """`GET <path>` sent to the listen port as to any web server: no proxy syntax at all."""
    return curl(*args, f"http://127.0.0.1:{bridge.port}{path}")


def secrets_and_internals(bridge, fake) -> list[str]:
    """What an unauthenticated answer must not contain."""
    data = Path(bridge.workdir) / "data"
    return [OPENAI_KEY, ANTHROPIC_KEY, OPENAI_HINT, fake.url, "127.0.0.1:" + fake.url.rsplit(
        ":", 1)[1], str(data), "aibridge.db", str(bridge.workdir), ALICE_TOKEN,
        "sqlite", "upstream"]


def test_a_probe_sent_straight_to_the_listen_port_gets_readiness_and_counts(bridge, fake):
    status, body = direct(bridge)
    assert status == 200, body
    doc = json.loads(body)
    assert doc["ready"] is True and doc["problems"] == []
    assert doc["providers"]["openai"] == {"central_keys": 1, "usable_keys": 1}
    assert doc["recording"] == {"database_reachable": True, "spooled": 0}
    for leak in secrets_and_internals(bridge, fake):
        assert leak not in body, leak


def test_the_host_header_does_not_matter_for_a_direct_probe(bridge):
    # A load balancer names itself, or the pod's address, in Host; the request is still ours.
    status, body = direct(bridge, "/readyz", "-H", "Host: bridge.example.com:443")
    assert status == 200 and json.loads(body)["ready"] is True


def test_liveness_and_head(bridge):
    status, body = direct(bridge, "/livez")
    assert status == 200 and json.loads(body)["live"] is True
    result = subprocess.run(["curl", "-sS", "-I", f"http://127.0.0.1:{bridge.port}/healthz"],
                            capture_output=True, text=True, timeout=30)
    assert result.stdout.startswith("HTTP/1.1 200"), result.stdout


def test_other_direct_paths_are_not_answered_as_health(bridge):
    status, _ = direct(bridge, "/")
    assert status == 407  # not ours: a proxy request without credentials, as before


def test_through_the_proxy_without_credentials_is_the_same_public_document(bridge, fake):
    result = bridge.curl("-s", "-w", "\n%{http_code}", "http://aibridge.health/healthz",
                         token=None)  # probes have no proxy credentials
    body, _, status = result.stdout.rpartition("\n")
    assert status == "200", result.stdout
    doc = json.loads(body)
    assert doc["ready"] is True and "listen" not in doc and "details" in doc
    for leak in secrets_and_internals(bridge, fake):
        assert leak not in body, leak
    assert "aibridge.health/healthz" in bridge.log()


def test_an_actor_sees_providers_keys_recording_and_the_ca(bridge, fake):
    result = bridge.curl("-s", "-w", "\n%{http_code}", "http://aibridge.health/healthz")
    body, _, status = result.stdout.rpartition("\n")
    assert status == "200", result.stdout
    doc = json.loads(body)
    openai = next(p for p in doc["providers"] if p["name"] == "openai")
    assert openai["upstream"] == fake.url
    assert openai["keys"] == [{"index": 0, "hint": OPENAI_HINT, "state": "valid",
                               "usable_in": 0.0, "probing": False}]
    assert doc["recording"]["backend"] == "sqlite" and doc["recording"]["queued"] == 0
    assert any(address.startswith("127.0.0.1:") for address in doc["listen"])
    cert = x509.load_pem_x509_certificate(Path(bridge.ca).read_bytes())
    assert doc["ca"]["sha256"] == ca.fingerprint(cert)
    assert OPENAI_KEY not in body and ANTHROPIC_KEY not in body
    # Straight to the port, the same credentials as a web server's Basic authentication.
    status, direct_body = direct(bridge, "/healthz", "-u", f"dev:{ALICE_TOKEN}")
    assert status == 200 and isinstance(json.loads(direct_body)["providers"], list)


def test_a_wrong_token_gets_the_public_document(bridge, fake):
    status, body = direct(bridge, "/healthz", "-u", "dev:not-a-token")
    assert status == 200 and isinstance(json.loads(body)["providers"], dict)
    assert fake.url not in body and OPENAI_HINT not in body


def test_the_startup_log_names_the_ca_in_use_with_its_fingerprint(bridge):
    cert = x509.load_pem_x509_certificate(Path(bridge.ca).read_bytes())
    log = bridge.log()
    line = next(line for line in log.splitlines() if "aibridge: CA " in line)
    assert ca.fingerprint(cert) in line
    assert str(Path(bridge.confdir).resolve() / "mitmproxy-ca.pem") in line
    assert str(Path(bridge.ca).resolve()) in line


@pytest.fixture(scope="module")
def dead_database_port() -> Iterator[int]:
    with socket.socket() as s:  # bound, never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def test_not_ready_while_the_database_is_unreachable_and_records_spool(
        fake, make_bridge, dead_database_port):
    url = f"postgresql://aibridge:secret-pw@127.0.0.1:{dead_database_port}/aibridge"
    bridge = make_bridge(provider_config(fake.url, extra=f'[recording]\nurl = "{url}"\n'))
    status, body = direct(bridge)
    assert status == 503, body
    doc = json.loads(body)
    assert doc["ready"] is False
    assert doc["recording"]["database_reachable"] is False
    assert any("recording database unreachable" in p for p in doc["problems"])
    for leak in (str(dead_database_port), "secret-pw", "postgresql", "aibridge:"):
        assert leak not in body, leak
    # Clients are still served meanwhile, and their records spool.
    chat = bridge.openai().chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert chat.choices[0].message.content == "Hello from fake"
    status, _ = direct(bridge, "/livez")
    assert status == 200
    result = bridge.curl("-s", "http://aibridge.health/healthz")  # an actor: the details
    details = json.loads(result.stdout)
    assert details["recording"]["db_available"] is False and details["recording"]["last_error"]
