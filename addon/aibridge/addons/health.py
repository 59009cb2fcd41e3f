"""The health endpoint: `curl --proxy http://bridge:8080 http://aibridge.health/healthz`.
Probes carry no proxy credentials, so this addon comes before proxy access in the chain."""

from __future__ import annotations

import logging

from mitmproxy import http

from aibridge.addons.configuration import listen_addresses
from aibridge.addons.runtime import Runtime
from aibridge.observe import health

logger = logging.getLogger("aibridge")


class Health:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def running(self) -> None:
        listen = ", ".join(f"{h or '*'}:{p}" for h, p in listen_addresses())
        logger.info(f"aibridge: listening on {listen}; health: curl --proxy "
                    f"http://<proxy> http://{health.HEALTH_HOST}/healthz")

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or flow.client_conn.tls_established:
            return
        if health.is_health_request(flow.request):
            flow.response = self.status_response()

    def status_response(self) -> http.Response:
        settings = self.runtime.settings_or_none
        problems = list(self.runtime.shim_problems)
        if settings is None:
            problems.append("not configured")
        return health.health_response(health.status_document(
            ready=not problems, problems=problems,
            listen=[f"{h or '*'}:{p}" for h, p in listen_addresses()],
            providers=settings.registry.providers if settings else [],
            breakers=settings.breakers if settings else None, recorder=self.runtime.recorder,
            telemetry_exporter=settings.config.telemetry.exporter if settings else "none"))
