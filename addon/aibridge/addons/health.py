"""The health endpoint (observe/health.py): `curl http://bridge:8080/healthz` straight to the
listen port (load balancers, Kubernetes probes), or through the proxy for the reserved host,
`curl --proxy http://bridge:8080 http://aibridge.health/healthz`. Probes carry no proxy
credentials, so this addon comes before proxy access in the chain; the details are answered
only to callers whose credentials name an actor, checked by ProxyAccess with its failure limits.

Why `next_layer`: in regular mode mitmproxy takes an origin-form request (`GET /healthz` with
`Host: 10.0.0.5:8080`) for a proxy request to the Host header's address, and by
`requestheaders` nothing tells it apart from `GET http://10.0.0.5:8080/healthz`. The first bytes
of the connection do, and this hook sees them before mitmproxy's own next_layer addon hands them
to the HTTP layer (scripts come first in the addon chain).

Also the start-up log's CA line: the certificate mitmproxy signs with (its TlsConfig addon's
store, loaded from the confdir before `running`), with its fingerprint, so the CA clients trust
can be compared with it.
"""

from __future__ import annotations

import logging
import os
import weakref
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from mitmproxy import connection, ctx, http
from mitmproxy.proxy import layer
from mitmproxy.proxy.layers import modes

from aibridge.access.actors import parse_proxy_credentials
from aibridge.addons.access import ProxyAccess
from aibridge.addons.configuration import listen_addresses
from aibridge.addons.runtime import Runtime, fail_closed
from aibridge.observe import ca, health

logger = logging.getLogger("aibridge")
EXPLICIT_PROXY = (modes.HttpProxy, modes.HttpUpstreamProxy)
CREDENTIAL_HEADERS = ("proxy-authorization", "authorization")


class Health:
    def __init__(self, runtime: Runtime, access: ProxyAccess | None = None) -> None:
        self.runtime = runtime
        self.access = access  # authenticates callers who want the details
        # Clients whose connection began with an origin-form request: they talk to the bridge
        # as to a web server, not through it.
        self.direct: weakref.WeakSet[connection.Client] = weakref.WeakSet()
        self.ca: dict[str, Any] | None = None

    def running(self) -> None:
        listen = ", ".join(f"{h or '*'}:{p}" for h, p in listen_addresses())
        logger.info(f"aibridge: listening on {listen}; health: curl http://<host>:<port>/healthz"
                    " (probes: ready or not, counts); details with an actor's credentials: "
                    f"curl --proxy-user <you>:<token> --proxy http://<host>:<port> "
                    f"http://{health.HEALTH_HOST}/healthz")
        self.ca = self._log_ca()

    def next_layer(self, nextlayer: layer.NextLayer) -> None:
        context = nextlayer.context
        # Only a new connection's first decision on a proxy listener, not those inside tunnels.
        if nextlayer.layer is not None or len(context.layers) != 1 \
                or not isinstance(context.layers[0], EXPLICIT_PROXY):
            return
        if health.starts_origin_form(nextlayer.data_client()):
            self.direct.add(context.client)

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or flow.client_conn.tls_established:
            return
        request = flow.request
        if health.is_health_request(request):
            probe = health.probe_path(request) or health.READY_PATHS[0]
        elif flow.client_conn in self.direct:
            probe = health.probe_path(request)
            if probe is None:
                return
        else:
            return
        flow.response = self.answer(flow, probe)

    def answer(self, flow: http.HTTPFlow, probe: str) -> http.Response:
        head = flow.request.method.upper() == "HEAD"
        details = self._shows_details(flow)  # also removes the credentials from the flow
        if probe == health.LIVE_PATH:
            return health.health_response(health.live_document(), head=head)
        return health.health_response(self.status(details=details), head=head)

    def status(self, *, details: bool) -> dict[str, Any]:
        settings = self.runtime.settings_or_none
        recorder = self.runtime.recorder
        problems = health.problems(configured=settings is not None,
                                   shim_problems=self.runtime.shim_problems, recorder=recorder)
        providers = settings.registry.providers if settings else []
        breakers = settings.breakers if settings else None
        shared = settings.shared if settings else None
        if not details:
            return health.public_document(problems=problems, providers=providers,
                                          breakers=breakers, recorder=recorder, shared=shared)
        return health.status_document(
            ready=not problems, problems=problems,
            listen=[f"{h or '*'}:{p}" for h, p in listen_addresses()],
            providers=providers, breakers=breakers, recorder=recorder,
            telemetry_exporter=settings.config.telemetry.exporter if settings else "none",
            ca=self.ca, shared=shared)

    def status_response(self) -> http.Response:
        """The public document (kept for callers that have no flow)."""
        return health.health_response(self.status(details=False))

    def _shows_details(self, flow: http.HTTPFlow) -> bool:
        user, token = "", None
        for name in CREDENTIAL_HEADERS:
            # Never kept in the flow: saved flows and mitmweb would show the token.
            value = flow.request.headers.pop(name, None)
            if value and token is None:
                user, token = parse_proxy_credentials(value)
        settings = self.runtime.settings_or_none
        if token is None or settings is None or self.access is None \
                or not settings.actors.requires_auth:
            return False
        return self.access.authenticate_client(flow, token, user) is not None

    def _log_ca(self) -> dict[str, Any] | None:
        tlsconfig = ctx.master.addons.get("tlsconfig")
        store = getattr(tlsconfig, "certstore", None)
        if store is None:  # not under mitmdump/mitmweb (tests with a bare master)
            return None
        cert = store.default_ca.to_cryptography()
        line, warning = ca.startup_lines(Path(os.path.expanduser(ctx.options.confdir)), cert)
        logger.info(f"aibridge: {line}")
        if warning:
            logger.warning(f"aibridge: {warning}")
        return {"subject": ca.subject(cert), "sha256": ca.fingerprint(cert),
                "not_after": f"{cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}",
                "pem": cert.public_bytes(serialization.Encoding.PEM).decode()}
