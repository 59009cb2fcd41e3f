"""A proxy auto-config (PAC) file: LLM provider hosts go to the bridge, everything else DIRECT.

Browsers and OS proxy settings evaluate `FindProxyForURL(url, host)` for every request. Only
exact provider host names are sent to the bridge: suffix or substring matches
(`dnsDomainIs`, `shExpMatch("*api.openai.com")`) would also route look-alikes such as
`evilapi.openai.com` or `api.openai.com.evil.net`, which the bridge would tunnel anyway, but
which have no business at the proxy. A wildcard host (`*.openai.azure.com`) matches as the
bridge matches it: `*` is exactly one whole label (shExpMatch's `*` would cross dots).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

# host:port, host being a DNS name, an IPv4 address or a bracketed IPv6 address. Nothing else
# may reach the PAC result: "PROXY a:1; DIRECT" would let provider traffic bypass the bridge
# whenever it is unreachable.
_PROXY = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
                    r"|\[[0-9A-Fa-f:.]+\]):(\d{1,5})")

TEMPLATE = """\
// AI Bridge proxy auto-config, written by `aibridge pac`{source}.
// LLM provider hosts go to the bridge; every other host connects DIRECT.
var AIBRIDGE_PROXY = {proxy};
var AIBRIDGE_HOSTS = {hosts};

function FindProxyForURL(url, host) {{
  var h = String(host).toLowerCase();
  // Some engines pass "host:port"; an IPv6 literal has more than one colon and is left alone.
  var colon = h.indexOf(":");
  if (colon >= 0 && colon === h.lastIndexOf(":")) h = h.substring(0, colon);
  if (h.charAt(h.length - 1) === ".") h = h.substring(0, h.length - 1);
  for (var i = 0; i < AIBRIDGE_HOSTS.length; i++) {{
    if (aibridgeMatches(h, AIBRIDGE_HOSTS[i])) return AIBRIDGE_PROXY;
  }}
  return "DIRECT";
}}

// A host name, or a pattern whose "*" labels stand for exactly one non-empty label each.
function aibridgeMatches(h, pattern) {{
  if (pattern.indexOf("*") < 0) return h === pattern;
  var labels = h.split("."), want = pattern.split(".");
  if (labels.length !== want.length) return false;
  for (var i = 0; i < want.length; i++) {{
    if (want[i] === "*" ? labels[i] === "" : labels[i] !== want[i]) return false;
  }}
  return true;
}}
"""


def validate_proxy(proxy: str) -> str:
    """`host:port` of the bridge as clients reach it; raises ValueError otherwise."""
    m = _PROXY.fullmatch(proxy)
    if not m or not 1 <= int(m.group(1)) <= 65535:
        raise ValueError(f"--proxy must be host:port (e.g. bridge.example.com:8080), "
                         f"not {proxy!r}")
    return proxy


def normalize_hosts(hosts: Iterable[str]) -> list[str]:
    """Lower-case, without a trailing dot, sorted and unique: what `FindProxyForURL` compares."""
    return sorted({h.strip().lower().rstrip(".") for h in hosts if h.strip()})


def render(hosts: Iterable[str], proxy: str, source: str | None = None) -> str:
    # json.dumps gives valid, fully escaped JS string literals (non-ASCII, quotes, U+2028).
    return TEMPLATE.format(
        source=f" from {json.dumps(source)}" if source else "",
        proxy=json.dumps(f"PROXY {validate_proxy(proxy)}"),
        hosts=json.dumps(normalize_hosts(hosts)),
    )
