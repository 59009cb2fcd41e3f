"""A health and status endpoint the addon answers itself, and the open-proxy guard.

Two ways to ask, neither needing proxy credentials:

- straight to the listen port, as to any web server: `curl http://bridge:8080/healthz` (what a
  load balancer or a Kubernetes probe sends: an origin-form request line, `GET /healthz`);
- through the proxy, for the reserved host `aibridge.health`: `curl --proxy http://bridge:8080
  http://aibridge.health/healthz`.

`/healthz` and `/readyz` answer readiness: 200, or 503 with the reasons (not configured, the
mitmproxy version the bridge was not built for, the recording database unreachable while
records spool). `/livez` answers 200 whenever the process serves requests, so a liveness probe
does not restart a bridge whose database is away.

What anyone may read is whether the bridge is ready, why not, and counts. The details (upstream
URLs, masked key hints, circuit keys, the recording database and spool, the CA) are for callers
that present an actor's proxy credentials.
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
from collections.abc import Iterable
from typing import Any

from mitmproxy import http
from mitmproxy.proxy import mode_specs

HEALTH_HOST = "aibridge.health"
READY_PATHS = ("/healthz", "/readyz")
LIVE_PATH = "/livez"
PROBE_METHODS = ("GET", "HEAD")
STARTED = time.time()
DETAILS_HINT = ("providers, key states, circuits and recording details are shown to callers "
                "that send an actor's proxy credentials")
# A request line whose target is a path: the client talks to the bridge as to a web server.
_ORIGIN_FORM = re.compile(rb"[A-Za-z]{1,20} /")


def is_health_request(request: http.Request) -> bool:
    return request.host.lower() == HEALTH_HOST and request.scheme == "http"


def starts_origin_form(data: bytes) -> bool:
    """Whether a connection's first bytes are an origin-form request (`GET /healthz HTTP/1.1`)
    rather than a proxy request (`CONNECT host:443`, `GET http://host/`)."""
    return _ORIGIN_FORM.match(data) is not None


def probe_path(request: http.Request) -> str | None:
    """The probe a request asks for (`/healthz`, `/readyz`, `/livez`), or None."""
    if request.method.upper() not in PROBE_METHODS:
        return None
    path = request.path.split("?", 1)[0]
    return path if path in (*READY_PATHS, LIVE_PATH) else None


def health_response(status: dict[str, Any], *, head: bool = False) -> http.Response:
    code = 200 if status.get("ready", status.get("live")) else 503
    body = json.dumps(status, indent=2, default=str).encode()
    response = http.Response.make(code, body, {"Content-Type": "application/json",
                                               "Cache-Control": "no-store"})
    if head:  # same headers, no body
        response.content = b""
        response.headers["Content-Length"] = str(len(body))
    return response


def problems(*, configured: bool, shim_problems: Iterable[str], recorder: Any) -> list[str]:
    """Why the bridge is not ready. Meant for anyone: no URLs, paths or hints in here."""
    found = list(shim_problems)
    if not configured:
        found.append("not configured")
    if recorder is not None and not recorder.database_reachable:
        found.append(f"recording database unreachable: {recorder.spooled} record(s) spooled, "
                     "written once it is back")
    return found


def degraded(shared: Any) -> list[str]:
    """What works, but less well: still ready (a balancer must not take every bridge out
    because the shared store is away), said in `status` and `degraded`."""
    if shared is not None and shared.degraded:
        return ["shared state unreachable: this process decides on its local state"]
    return []


def public_document(*, problems: list[str], providers: Iterable[Any], breakers: Any,
                    recorder: Any, shared: Any = None) -> dict[str, Any]:
    """Ready or not, why, and counts: what an unauthenticated probe may read."""
    worse = degraded(shared)
    return {
        "ready": not problems,
        "status": "unavailable" if problems else "degraded" if worse else "ok",
        "degraded": worse,
        "problems": problems,
        "uptime_seconds": round(time.time() - STARTED, 1),
        "providers": {p.name: _key_counts(p) for p in providers},
        "open_circuits": _open_circuits(breakers),
        "recording": None if recorder is None else {
            "database_reachable": recorder.database_reachable,
            "spooled": recorder.spooled,
        },
        "shared_state": None if shared is None else {"reachable": not shared.degraded},
        "details": DETAILS_HINT,
    }


def live_document() -> dict[str, Any]:
    return {"live": True, "uptime_seconds": round(time.time() - STARTED, 1)}


def status_document(*, ready: bool, problems: list[str], listen: list[str],
                    providers: Iterable[Any], breakers: Any, recorder: Any,
                    telemetry_exporter: str, ca: dict[str, Any] | None = None,
                    shared: Any = None) -> dict[str, Any]:
    """Everything, with masked key hints only: for callers with an actor's credentials."""
    worse = degraded(shared)
    return {
        "ready": ready,
        "status": "unavailable" if problems else "degraded" if worse else "ok",
        "degraded": worse,
        "shared_state": None if shared is None else shared.link.status(),
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
        "ca": ca,
    }


def _key_counts(provider: Any) -> dict[str, int]:
    rows = provider.pool.snapshot() if provider.pool is not None else []
    return {"central_keys": len(rows),
            "usable_keys": sum(1 for row in rows if row["state"] == "valid")}


def _open_circuits(breakers: Any) -> int:
    if breakers is None:
        return 0
    return sum(1 for c in breakers.snapshot() if c.get("state") != "closed")


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
