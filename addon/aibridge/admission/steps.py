"""The admission steps, in the order `pipelines` puts them."""

from __future__ import annotations

from dataclasses import dataclass

from aibridge.admission.body import declared_too_large, parse_json_object, too_large
from aibridge.admission.credential import resolve_credential
from aibridge.admission.pipeline import Candidate, Pipeline
from aibridge.intercept import (
    OPENAI_ERR_TYPE_INVALID_REQUEST,
    OPENAI_ERR_TYPE_NOT_FOUND,
    new_response_error,
)
from aibridge.keys.circuit import CircuitBreakers, circuit_open_error
from aibridge.providers import BRIDGED, UNKNOWN

MAX_HEAD_BYTES = 64 << 10  # provider APIs refuse larger heads anyway; we never forward them


class _Step:
    def release(self, candidate: Candidate) -> None:
        pass


class HeaderLimits(_Step):
    """Heads over 64 KiB, and header values with CR, LF or NUL, never go upstream."""

    def admit(self, candidate: Candidate) -> None:
        assert candidate.request is not None
        headers = candidate.request.headers
        if sum(len(k) + len(v) for k, v in headers.fields) > MAX_HEAD_BYTES:
            raise new_response_error(f"request headers larger than {MAX_HEAD_BYTES >> 10} KiB",
                                     OPENAI_ERR_TYPE_INVALID_REQUEST, "headers_too_large", 431)
        if any(c in value for _, value in headers.items(multi=True) for c in "\r\n\0"):
            raise new_response_error("header values must not contain CR, LF or NUL",
                                     OPENAI_ERR_TYPE_INVALID_REQUEST, "invalid_header", 400)


class KnownRoute(_Step):
    """A path on a provider host that is neither bridged nor passed through is refused."""

    def admit(self, candidate: Candidate) -> None:
        if candidate.match.kind == UNKNOWN:
            assert candidate.request is not None
            raise new_response_error(
                f"route not supported: {candidate.request.method} {candidate.path}",
                OPENAI_ERR_TYPE_NOT_FOUND, "route_not_supported", 404)


@dataclass
class DeclaredSize(_Step):
    """A bridged body whose Content-Length is over the limit is refused before it is read."""

    limit: int

    def admit(self, candidate: Candidate) -> None:
        assert candidate.request is not None
        if candidate.match.kind == BRIDGED and declared_too_large(candidate.request, self.limit):
            raise too_large(self.limit)


@dataclass
class JsonBody(_Step):
    """A bridged body is a JSON object within the size limit; its facts are read once here."""

    limit: int

    def admit(self, candidate: Candidate) -> None:
        assert candidate.request is not None and candidate.api is not None
        candidate.body = parse_json_object(candidate.request, self.limit)
        candidate.info = candidate.api.request_info(candidate.body, candidate.match.params)


@dataclass
class Circuit(_Step):
    """An open breaker for (provider, route, model) answers at once instead of waiting."""

    breakers: CircuitBreakers

    def admit(self, candidate: Candidate) -> None:
        assert candidate.info is not None
        admission = self.breakers.admit(candidate.provider.name, candidate.path,
                                        candidate.info.model)
        if not admission.allowed:
            candidate.circuit_open = True
            raise circuit_open_error(admission.retry_after)
        candidate.circuit = admission

    def release(self, candidate: Candidate) -> None:
        if candidate.circuit is not None:
            self.breakers.release(candidate.circuit)
            candidate.circuit = None


class Credential(_Step):
    """The key that goes upstream: a central one from the pool, or the caller's own."""

    def admit(self, candidate: Candidate) -> None:
        assert candidate.request is not None
        pool = candidate.provider.pool
        candidate.credential = resolve_credential(
            candidate.provider, candidate.request.headers, candidate.proxy_token,
            attempt=pool.attempt() if pool else None)


@dataclass(frozen=True)
class Pipelines:
    head: Pipeline  # request headers of any flow on a provider host
    bridged: Pipeline  # the body of a bridged request
    passthrough: Pipeline  # a passed-through request (key swap only)
    frame: Pipeline  # a WebSocket `response.create` frame


def pipelines(max_body_bytes: int, breakers: CircuitBreakers | None) -> Pipelines:
    circuit = [Circuit(breakers)] if breakers is not None else []
    # Budgets, rate limits and secret scanning go between the circuit and the credential.
    return Pipelines(
        head=Pipeline([HeaderLimits(), KnownRoute(), DeclaredSize(max_body_bytes)]),
        bridged=Pipeline([JsonBody(max_body_bytes), *circuit, Credential()]),
        passthrough=Pipeline([Credential()]),
        frame=Pipeline(circuit),
    )
