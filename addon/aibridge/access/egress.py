"""Where clients may make the proxy connect: not into the company's own network by default.

A CONNECT tunnel or a plain-HTTP request names its destination; the proxy would otherwise
reach loopback, link-local and private addresses on the client's behalf (SSRF). The check runs
on the resolved address when the connection is opened, and the connection is pinned to that
address, so DNS rebinding cannot slip past it. Provider upstreams set by the operator are
trusted for their provider's traffic only: a client cannot CONNECT to them, and a provider's
host name is no way around the check either (addons/egress.py).

"Internal" is what `ipaddress` does not call global (private, loopback, link-local, multicast,
reserved, unspecified, site-local) plus the explicit list below, judged on the address and on
any IPv4 address an IPv6 one carries.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Ranges refused besides what `ipaddress` itself calls non-global (private, loopback,
# link-local, multicast, reserved, unspecified, site-local): kept explicit so that the policy
# does not depend on one Python version's tables (100.64.0.0/10 is not `is_private`, say).
BLOCKED = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4",
    "240.0.0.0/4",
    "::1/128", "::/128", "::/96", "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16", "fc00::/7",
    "fe80::/10", "fec0::/10", "ff00::/8",
))
# The NAT64 well-known prefix carries an IPv4 address in its last 32 bits (RFC 6052).
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_LOW32 = 0xFFFFFFFF


class EgressDenied(Exception):
    pass


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(v, strict=False) for v in values)


def is_blocked(ip: str, allowed: tuple[Network, ...]) -> bool:
    """True when `ip`, or an IPv4 address it carries, is internal and not allowed."""
    return any(_internal(a) and not _within(a, allowed) for a in _views(ipaddress.ip_address(ip)))


def _views(address: Address) -> tuple[Address, ...]:
    """The addresses a connection to `address` may really reach. An IPv4-mapped address is an
    IPv4 connection; IPv4-compatible (`::a.b.c.d`), 6to4, Teredo and NAT64 addresses can be
    routed (by a tunnel interface or a gateway) to the IPv4 address inside them, so that one is
    judged too: `::127.0.0.1` or `2002:7f00:1::` must not reach loopback."""
    if isinstance(address, ipaddress.IPv4Address):
        return (address,)
    if address.ipv4_mapped is not None:
        return (address.ipv4_mapped,)
    views: list[Address] = [address]
    if address.sixtofour is not None:
        views.append(address.sixtofour)
    if address.teredo is not None:
        views.extend(address.teredo)  # (server, client)
    if int(address) >> 32 == 0 or address in _NAT64:
        views.append(ipaddress.IPv4Address(int(address) & _LOW32))
    return tuple(views)


def _internal(address: Address) -> bool:
    if (address.is_private or address.is_loopback or address.is_link_local
            or address.is_multicast or address.is_reserved or address.is_unspecified
            or not address.is_global):
        return True
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return True
    return any(address in n for n in BLOCKED if n.version == address.version)


def _within(address: Address, networks: tuple[Network, ...]) -> bool:
    return any(address in n for n in networks if n.version == address.version)


async def resolve_allowed(host: str, port: int, allowed: tuple[Network, ...]) -> str:
    """The address to connect to, or `EgressDenied` when the destination is internal."""
    try:
        ipaddress.ip_address(host)
        candidates = [host]
    except ValueError:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as e:
            raise EgressDenied(f"cannot resolve {host}: {e.strerror or e}") from None
        candidates = [str(info[4][0]) for info in infos]
    # One internal address is enough to refuse: a name must not mix public and private.
    for ip in candidates:
        if is_blocked(ip, allowed):
            raise EgressDenied(f"{host}:{port} resolves to {ip}, an internal address; "
                               "add it to [egress] allow to permit it")
    return candidates[0]
