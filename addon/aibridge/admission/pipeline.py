"""One admission pipeline for every bridged request: HTTP requests and WebSocket
`response.create` frames alike.

A step looks at the request and either lets it pass (perhaps taking something it must give
back, like a circuit-breaker slot) or refuses it by raising `ResponseError`, which becomes the
client's answer in the API's own error shape. When a later step refuses, the earlier steps'
`release` runs, newest first, so nothing stays taken for a request that never went upstream.

The order is the policy: cheap, request-independent refusals first, the key choice last (so no
key is spent on a request some other step refuses). Budgets and rate limits (one step, their
state work one batch: steps.Quotas) and secret scanning are steps of this same list, between
the circuit breaker and the credential.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from mitmproxy import http

from aibridge.admission.credential import UpstreamCredential
from aibridge.intercept import Actor
from aibridge.keys.circuit import Admission
from aibridge.providers import Provider, RouteMatch
from aibridge.providers.base import RequestInfo, WireApi
from aibridge.state.ledger import Hold

if TYPE_CHECKING:
    from aibridge.admission.secrets import SecretsOutcome


@dataclass
class Candidate:
    """What the steps see of one request, and what they leave for the forwarder."""

    provider: Provider
    match: RouteMatch
    path: str  # without the query
    proxy_token: bytes | None  # SHA-256 of the caller's proxy token
    request: http.Request | None = None  # None for a WebSocket frame
    body: dict | None = None  # the JSON body, once read
    info: RequestInfo | None = None  # model, streaming, correlating id, once read
    circuit: Admission | None = None  # the circuit breaker's slot, once taken
    credential: UpstreamCredential | None = None  # the upstream credential, once chosen
    circuit_open: bool = False  # refused because the breaker is open
    actor: Actor | None = None  # who is calling (budgets and limits match on it)
    body_bytes: int | None = None  # the body's size when known without encoding it again
    # What admission took that the request gives back when it ends (budget reservations,
    # concurrency slots, as one state.ledger.Held): kept in the runtime's ledger under its
    # interception's id.
    holds: list[Hold] = field(default_factory=list)
    # What secret scanning found and did (admission.secrets.SecretsOutcome), if anything.
    secrets: SecretsOutcome | None = None

    # The wire format when the route match does not say it: a WebSocket frame's (the match
    # is the handshake's GET).
    wire: WireApi | None = None

    @property
    def api(self) -> WireApi | None:
        return self.wire or self.match.api


class Step(Protocol):
    def admit(self, candidate: Candidate) -> None:
        """Let it pass, or raise `ResponseError`."""

    def release(self, candidate: Candidate) -> None:
        """Give back what `admit` took: a later step refused."""


class Pipeline:
    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = tuple(steps)

    def admit(self, candidate: Candidate) -> None:
        passed: list[Step] = []
        try:
            for step in self.steps:
                step.admit(candidate)
                passed.append(step)
        except BaseException:
            for step in reversed(passed):
                step.release(candidate)
            raise
