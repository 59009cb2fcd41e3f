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


@pytest.mark.parametrize(("ip", "why"), [
    ("::127.0.0.1", "IPv4-compatible loopback"), ("::10.0.0.1", "IPv4-compatible private"),
    ("::ffff:10.0.0.1", "IPv4-mapped private"), ("::ffff:169.254.169.254", "mapped metadata"),
    ("224.0.0.1", "IPv4 multicast"), ("239.255.255.250", "IPv4 multicast (SSDP)"),
    ("ff02::1", "IPv6 multicast"), ("ff0e::1", "IPv6 global-scope multicast"),
    ("fec0::1", "IPv6 site-local"), ("fe80::1%1", "scoped link-local"),
    ("2002:7f00:1::1", "6to4 carrying 127.0.0.1"), ("2002:a00:1::1", "6to4 carrying 10.0.0.1"),
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "Teredo, client 10.0.0.1"),
    ("64:ff9b::a00:1", "NAT64 carrying 10.0.0.1"), ("64:ff9b:1::1", "NAT64 local use"),
    ("100::1", "IPv6 discard"), ("2001:db8::1", "IPv6 documentation"),
    ("255.255.255.255", "broadcast"), ("192.0.2.1", "documentation"),
])
def test_special_and_embedded_addresses_are_blocked(ip, why):
    assert egress.is_blocked(ip, ()), why


def test_an_ipv4_allowance_covers_the_mapped_form_only():
    allowed = egress.parse_networks(["127.0.0.0/8"])
    assert not egress.is_blocked("127.0.0.1", allowed)
    assert not egress.is_blocked("::ffff:127.0.0.1", allowed)  # the same IPv4 connection
    # An IPv4-compatible address is an IPv6 destination: the IPv4 allowance does not open it.
    assert egress.is_blocked("::127.0.0.1", allowed)


def test_an_allowed_ipv6_prefix_still_checks_the_ipv4_address_inside():
    allowed = egress.parse_networks(["64:ff9b::/96"])  # a NAT64 network
    assert not egress.is_blocked("64:ff9b::808:808", allowed)  # 8.8.8.8
    assert egress.is_blocked("64:ff9b::a00:1", allowed)  # 10.0.0.1


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
