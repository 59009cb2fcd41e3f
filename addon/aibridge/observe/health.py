"""A health and status endpoint the addon answers itself, and the open-proxy guard.

Probes (systemd, Docker HEALTHCHECK, Kubernetes) send a plain-HTTP request for the reserved
host `aibridge.health` through the proxy: `curl --proxy http://bridge:8080
http://aibridge.health/healthz`. It needs no proxy credentials and shows only masked hints.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Iterable
from typing import Any

from mitmproxy import http
from mitmproxy.proxy import mode_specs

HEALTH_HOST = "aibridge.health"
STARTED = time.time()


def is_health_request(request: http.Request) -> bool:
    return request.host.lower() == HEALTH_HOST and request.scheme == "http"


def health_response(status: dict[str, Any]) -> http.Response:
    code = 200 if status.get("ready") else 503
    return http.Response.make(code, json.dumps(status, indent=2, default=str).encode(),
                              {"Content-Type": "application/json", "Cache-Control": "no-store"})


def status_document(*, ready: bool, problems: list[str], listen: list[str],
                    providers: Iterable[Any], breakers: Any, recorder: Any,
                    telemetry_exporter: str) -> dict[str, Any]:
    return {
        "ready": ready,
        "problems": problems,
        "uptime_seconds": round(time.time() - STARTED, 1),
        "listen": listen,
        "providers": [{
            "name": p.name, "type": p.type, "hosts": list(p.hosts), "upstream": str(p.upstream),
            "credentials": p.credentials,
            "keys": p.pool.snapshot() if p.pool is not None else [],
        } for p in providers],
        "circuits": [c for c in breakers.snapshot() if c.get("state") != "closed"]
        if breakers is not None else [],
        "recording": recorder.stats() if recorder is not None else None,
        "telemetry": telemetry_exporter,
    }


def listen_addresses(modes: Iterable[str], default_host: str, default_port: int
                     ) -> list[tuple[str, int | None]]:
    result = []
    for spec in modes:
        mode = mode_specs.ProxyMode.parse(spec)
        result.append((mode.listen_host(default_host), mode.listen_port(default_port)))
    return result


def is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "" (all interfaces) or a host name: treat as shared


def open_proxy_problem(addresses: list[tuple[str, int | None]]) -> str | None:
    """Why starting would expose an open proxy, or None when it is safe."""
    shared = [f"{h or '0.0.0.0'}:{p}" for h, p in addresses if not is_loopback(h)]
    if not shared:
        return None
    return (f"refusing to run an open proxy on {', '.join(shared)}: anyone who can reach it "
            "could use the central keys. Add actors ([auth] actors_file = \"actors.toml\", see "
            "the README), or listen on loopback only (--listen-host 127.0.0.1), or accept an "
            "open proxy explicitly with [auth] allow_open_proxy = true")
