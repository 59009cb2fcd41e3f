"""Where clients may make the proxy connect: not into the company's own network by default.

A CONNECT tunnel or a plain-HTTP request names its destination; the proxy would otherwise
reach loopback, link-local and private addresses on the client's behalf (SSRF). The check runs
on the resolved address when the connection is opened, and the connection is pinned to that
address, so DNS rebinding cannot slip past it. Provider upstreams set by the operator are
trusted for their provider's traffic only: a client cannot CONNECT to them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

BLOCKED = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "240.0.0.0/4",
    "::1/128", "::/128", "64:ff9b::/96", "64:ff9b:1::/48", "2002::/16", "fc00::/7", "fe80::/10",
))


class EgressDenied(Exception):
    pass


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(v, strict=False) for v in values)


def is_blocked(ip: str, allowed: tuple[Network, ...]) -> bool:
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if any(address in n for n in allowed):
        return False
    return any(address in n for n in BLOCKED if n.version == address.version)


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
