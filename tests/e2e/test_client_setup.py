"""Clients configured the way the README says: environment variables only, no code changes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cryptography import x509

from aibridge.observe import ca
from aibridge.ops import cabundle
from tests.e2e.harness import ALICE_TOKEN, OPENAI_KEY, ROOT

SCRIPT = f"""
import anthropic, openai
chat = openai.OpenAI(api_key="unused").chat.completions.create(
    model="gpt-4o", messages=[{{"role": "user", "content": "hi"}}])
msg = anthropic.Anthropic(api_key="{ALICE_TOKEN}").messages.create(
    model="claude-sonnet-5", max_tokens=8, messages=[{{"role": "user", "content": "hi"}}])
print(chat.choices[0].message.content, "|", msg.content[0].text)
"""


def test_sdks_work_with_https_proxy_and_the_ca_bundle_only(bridge, fake, tmp_path):
    bundle = tmp_path / "bundle.pem"
    out = subprocess.run([str(ROOT / "scripts" / "ca-bundle"), "--confdir",
                          str(bridge.confdir), "--out", str(bundle)],
                         capture_output=True, text=True, timeout=60, check=True)
    assert f"SSL_CERT_FILE={bundle}" in out.stdout
    # It names what it bundled: the CA the bridge signs with, as its start-up log does.
    used = x509.load_pem_x509_certificate(Path(bridge.ca).read_bytes())
    assert f"SHA-256 {ca.fingerprint(used)}" in out.stdout
    assert ca.fingerprint(used) in bridge.log()
    system = cabundle.system_bundle()
    text = bundle.read_text()
    assert system is not None and text.startswith(system.read_text())
    assert text.endswith(Path(bridge.ca).read_text())

    env = {k: v for k, v in os.environ.items() if "PROXY" not in k.upper()}
    env |= {"HTTPS_PROXY": bridge.proxy_url(), "SSL_CERT_FILE": str(bundle)}
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.stdout.strip() == "Hello from fake | Hello from fake", result.stderr
    assert fake.requests[0].header("Authorization") == f"Bearer {OPENAI_KEY}"
    assert fake.requests[1].header("X-AI-Bridge-Actor-ID") == "alice"


def test_ca_bundle_refuses_a_confdir_the_bridge_never_started_with(bridge, tmp_path):
    """The README's commands must share one confdir: given another, ca-bundle says so instead
    of minting a CA the bridge does not sign with."""
    other = tmp_path / "certs"
    out = subprocess.run([str(ROOT / "scripts" / "ca-bundle"), "--confdir", str(other),
                          "--out", str(tmp_path / "bundle.pem")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert f"no CA in {other}" in out.stderr and f"--set confdir={other}" in out.stderr
    assert not (tmp_path / "bundle.pem").exists() and not other.exists()
