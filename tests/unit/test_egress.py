"""Internal destinations are refused unless allowed; names are checked on what they resolve to."""

import pytest

from aibridge.access import egress


@pytest.mark.parametrize(("ip", "blocked"), [
    ("127.0.0.1", True), ("10.1.2.3", True), ("172.16.0.1", True), ("192.168.1.1", True),
    ("169.254.169.254", True), ("100.64.0.1", True), ("::1", True), ("fe80::1", True),
    ("fd00::1", True), ("::ffff:127.0.0.1", True), ("0.0.0.0", True),
    ("8.8.8.8", False), ("2001:4860:4860::8888", False), ("1.1.1.1", False),
])
def test_default_blocklist(ip, blocked):
    assert egress.is_blocked(ip, ()) is blocked


def test_allowlist_opens_a_network():
    allowed = egress.parse_networks(["10.0.0.0/8"])
    assert not egress.is_blocked("10.9.9.9", allowed)
    assert egress.is_blocked("192.168.0.1", allowed)


async def test_names_are_resolved_before_the_check():
    with pytest.raises(egress.EgressDenied, match=r"resolves to (127\.0\.0\.1|::1),"):
        await egress.resolve_allowed("localhost", 443, ())
    assert await egress.resolve_allowed("localhost", 443,
                                        egress.parse_networks(["127.0.0.0/8", "::1/128"])) in (
        "127.0.0.1", "::1")
    assert await egress.resolve_allowed("8.8.8.8", 443, ()) == "8.8.8.8"
    with pytest.raises(egress.EgressDenied, match="cannot resolve"):
        await egress.resolve_allowed("no-such-host.invalid", 443, ())
