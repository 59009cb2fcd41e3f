"""The PROXY protocol header a TCP load balancer (HAProxy `send-proxy-v2` or `send-proxy`)
puts before the client's own bytes, naming the client's address; and which peers may send it.

Pure parsing: `parse` takes the first bytes of a connection and says how many of them the
header took and which client address it names. Both versions of the protocol are read:

- v2 (binary): a 12-byte signature, a version/command byte, an address family byte, a 2-byte
  length, then the addresses and optional TLVs (skipped). The LOCAL command (HAProxy's own
  health checks) and the UNSPEC and UNIX families name no client: the connection's own address
  stays.
- v1 (text): `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\\r\\n`, or `PROXY UNKNOWN …\\r\\n`
  (no client named), at most 107 bytes.

Data that begins with neither signature carries no header (`NO_HEADER`: nothing taken); a
header that begins with one but is not a valid header is an error, never guessed at.

The PyPI package `proxy-protocol` parses both versions too, but is tied to its own asyncio
server and has had no release since 2024; these few dozen lines are all the bridge needs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_SIGNATURE = b"PROXY "
V1_MAX = 107  # the longest v1 line, "\r\n" included (the protocol's own bound)
V2_MAX = 4096  # addresses (at most 216 bytes) and TLVs: far more than a balancer sends
V2_FIXED = 16  # signature, version/command, family/protocol, length

Address = tuple[str, int]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ProxyHeaderError(ValueError):
    """The data begins like a PROXY header but is not a valid one."""


@dataclass(frozen=True)
class ProxyHeader:
    length: int  # bytes of the connection the header took
    source: Address | None  # the client's address; None: the connection's own stays
    version: int  # 1 or 2; 0 for NO_HEADER


NO_HEADER = ProxyHeader(0, None, 0)


def parse(data: bytes) -> ProxyHeader | None:
    """The PROXY header at the start of `data`, `NO_HEADER` when there is none, or None when
    more bytes are needed to tell. Raises ProxyHeaderError for a malformed or oversized one."""
    if data.startswith(V2_SIGNATURE):
        return _parse_v2(data)
    if data.startswith(V1_SIGNATURE):
        return _parse_v1(data)
    if V2_SIGNATURE.startswith(data[:12]) or V1_SIGNATURE.startswith(data[:6]):
        return None  # a prefix of a signature (or nothing yet)
    return NO_HEADER


def _parse_v2(data: bytes) -> ProxyHeader | None:
    if len(data) < V2_FIXED:
        return None
    version, command = data[12] >> 4, data[12] & 0x0F
    family = data[13] >> 4
    length = V2_FIXED + int.from_bytes(data[14:16], "big")
    if version != 2:
        raise ProxyHeaderError(f"PROXY protocol v2 header with version {version}")
    if command not in (0, 1):
        raise ProxyHeaderError(f"PROXY protocol v2 header with command {command}")
    if length > V2_MAX:
        raise ProxyHeaderError(f"PROXY protocol v2 header of {length} bytes (at most {V2_MAX})")
    if len(data) < length:
        return None
    if command == 0:  # LOCAL: the balancer's own connection (a health check)
        return ProxyHeader(length, None, 2)
    block = data[V2_FIXED:length]
    if family == 1:  # AF_INET: source, destination, source port, destination port
        if len(block) < 12:
            raise ProxyHeaderError("PROXY protocol v2 header too short for IPv4 addresses")
        host = str(ipaddress.IPv4Address(block[0:4]))
        return ProxyHeader(length, (host, int.from_bytes(block[8:10], "big")), 2)
    if family == 2:  # AF_INET6
        if len(block) < 36:
            raise ProxyHeaderError("PROXY protocol v2 header too short for IPv6 addresses")
        host = _plain(ipaddress.IPv6Address(block[0:16]))
        return ProxyHeader(length, (host, int.from_bytes(block[32:34], "big")), 2)
    if family in (0, 3):  # UNSPEC, UNIX: no address to take
        return ProxyHeader(length, None, 2)
    raise ProxyHeaderError(f"PROXY protocol v2 header with address family {family}")


def _parse_v1(data: bytes) -> ProxyHeader | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyHeaderError(f"PROXY protocol v1 line longer than {V1_MAX} bytes")
        if b"\n" in data:
            raise ProxyHeaderError("PROXY protocol v1 line not ended by CRLF")
        return None
    try:
        fields = data[len(V1_SIGNATURE):end].decode("ascii").split(" ")
    except UnicodeDecodeError:
        raise ProxyHeaderError("PROXY protocol v1 line that is not ASCII") from None
    length = end + 2
    if fields[0] == "UNKNOWN":
        return ProxyHeader(length, None, 1)
    if fields[0] not in ("TCP4", "TCP6") or len(fields) != 5:
        raise ProxyHeaderError(f"PROXY protocol v1 line with {fields[0][:8]!r} and "
                               f"{len(fields)} fields")
    kind = ipaddress.IPv4Address if fields[0] == "TCP4" else ipaddress.IPv6Address
    try:
        source, _ = kind(fields[1]), kind(fields[2])
    except ValueError:
        raise ProxyHeaderError(f"PROXY protocol v1 line with addresses that are not "
                               f"{fields[0]}") from None
    ports = [_port(text) for text in fields[3:5]]
    return ProxyHeader(length, (_plain(source), ports[0]), 1)


def _port(text: str) -> int:
    if not text.isdigit() or len(text) > 5 or (len(text) > 1 and text[0] == "0") \
            or int(text) > 65535:
        raise ProxyHeaderError(f"PROXY protocol v1 line with port {text[:8]!r}")
    return int(text)


def _plain(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """An IPv4-mapped IPv6 address as the IPv4 address it is, so one client has one key."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


# -- who may send one ----------------------------------------------------------------------

def trusted_networks(values: Sequence[str]) -> tuple[Network, ...]:
    """The balancers' addresses or networks (`127.0.0.1`, `10.0.0.0/8`, `::1`); raises
    ValueError naming the entry that is neither."""
    networks = []
    for value in values:
        text = value.strip()
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address or network") from None
    return tuple(networks)


def is_trusted(host: str, networks: Sequence[Network]) -> bool:
    """Whether a connection from `host` (a peer address as the socket gives it) may name its
    client: only a balancer's header is believed, so no client can choose its own address."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)
