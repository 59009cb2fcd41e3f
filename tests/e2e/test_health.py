"""The health endpoint through a real mitmdump: no proxy credentials, masked hints only."""

import json

from tests.e2e.harness import ANTHROPIC_KEY, OPENAI_KEY


def test_health_endpoint_reports_providers_keys_and_recording(bridge):
    result = bridge.curl("-s", "-w", "\n%{http_code}", "http://aibridge.health/healthz",
                         token=None)  # probes have no proxy credentials
    body, _, status = result.stdout.rpartition("\n")
    assert status == "200", result.stdout
    doc = json.loads(body)
    assert doc["ready"] is True and doc["problems"] == []
    openai = next(p for p in doc["providers"] if p["name"] == "openai")
    assert openai["keys"] == [{"index": 0, "hint": "sk-c...cdef", "state": "valid",
                               "usable_in": 0.0, "probing": False}]
    assert doc["recording"]["backend"] == "sqlite"
    assert doc["recording"]["queued"] == 0
    assert OPENAI_KEY not in body and ANTHROPIC_KEY not in body
    assert any(address.startswith("127.0.0.1:") for address in doc["listen"])
    assert "aibridge.health/healthz" in bridge.log()
