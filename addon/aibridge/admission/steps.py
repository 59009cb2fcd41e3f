"""The admission steps, in the order `pipelines` puts them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Protocol

from aibridge.admission.body import declared_too_large, parse_json_object, too_large
from aibridge.admission.credential import resolve_credential
from aibridge.admission.pipeline import Candidate, Pipeline, Step
from aibridge.config import MAX_PASSTHROUGH_BODY_BYTES
from aibridge.intercept import (
    OPENAI_ERR_TYPE_INVALID_REQUEST,
    OPENAI_ERR_TYPE_NOT_FOUND,
    OPENAI_ERR_TYPE_PERMISSION,
    ResponseError,
    new_response_error,
)
from aibridge.keys.circuit import CircuitBreakers, circuit_open_error
from aibridge.providers import BRIDGED, DENIED, INVALID, PASSTHROUGH, UNKNOWN
from aibridge.state.ledger import Held, Part
from aibridge.state.store import AdmitOp, StateStore

MAX_HEAD_BYTES = 64 << 10  # provider APIs refuse larger heads anyway; we never forward them
HTTP1_VERSIONS = frozenset({"HTTP/1.1", "HTTP/1.0"})


class _Step:
    def release(self, candidate: Candidate) -> None:
        pass


class Http1Only(_Step):
    """Provider hosts speak HTTP/1.1 to clients: mitmproxy's own failure answers (JSON errors,
    the event that ends a cut stream) are only replaced on its HTTP/1 path (addons/mitm_shim).
    A client that offers only h2 in ALPN, or sends the HTTP/2 preface without ALPN, gets this
    JSON error in its own protocol instead of an HTML page later."""

    def admit(self, candidate: Candidate) -> None:
        assert candidate.request is not None
        if candidate.request.http_version not in HTTP1_VERSIONS:
            raise new_response_error(
                f"{candidate.request.http_version} is not supported on provider hosts: use "
                "HTTP/1.1 (offer http/1.1 in TLS ALPN)",
                OPENAI_ERR_TYPE_INVALID_REQUEST, "http_version_not_supported", 505)


class HeaderLimits(_Step):
    """Heads over 64 KiB, and header values with CR, LF or NUL, never go upstream."""

    def admit(self, candidate: Candidate) -> None:
        assert candidate.request is not None
        fields = candidate.request.headers.fields
        # Counted and searched in C (map, join, memchr): a loop over the fields in Python was
        # most of this step's cost, on every request.
        if sum(map(len, chain.from_iterable(fields))) > MAX_HEAD_BYTES:
            raise new_response_error(f"request headers larger than {MAX_HEAD_BYTES >> 10} KiB",
                                     OPENAI_ERR_TYPE_INVALID_REQUEST, "headers_too_large", 431)
        # On the raw bytes: the same three characters as in the decoded values, no decoding.
        values = b"".join(map(itemgetter(1), fields))
        if b"\r" in values or b"\n" in values or b"\0" in values:
            raise new_response_error("header values must not contain CR, LF or NUL",
                                     OPENAI_ERR_TYPE_INVALID_REQUEST, "invalid_header", 400)


class KnownRoute(_Step):
    """A path on a provider host that is neither bridged nor passed through is refused; so is
    one on the provider's deny list, and one without a single safe reading (providers.paths)."""

    def admit(self, candidate: Candidate) -> None:
        kind = candidate.match.kind
        if kind in (UNKNOWN, DENIED, INVALID):
            assert candidate.request is not None
            method, reason = candidate.request.method, candidate.match.reason
        if kind == UNKNOWN:
            raise new_response_error(
                f"route not supported: {method} {candidate.path}",
                OPENAI_ERR_TYPE_NOT_FOUND, "route_not_supported", 404, should_retry=False)
        if kind == DENIED:
            raise new_response_error(
                f"route denied: {method} {candidate.path} is on provider "
                f"{candidate.provider.name!r}'s deny list ({reason}); the bridge does not "
                "forward it", OPENAI_ERR_TYPE_PERMISSION, "route_denied", 403,
                should_retry=False)
        if kind == INVALID:
            raise new_response_error(f"invalid request path: {reason}",
                                     OPENAI_ERR_TYPE_INVALID_REQUEST, "invalid_path", 400,
                                     should_retry=False)


@dataclass
class DeclaredSize(_Step):
    """A body whose Content-Length is over its route's limit is refused before it is read:
    bridged bodies are held and parsed, passed-through ones (file uploads) only streamed."""

    limit: int
    passthrough_limit: int

    def admit(self, candidate: Candidate) -> None:
        assert candidate.request is not None
        kind = candidate.match.kind
        limit = (self.limit if kind == BRIDGED
                 else self.passthrough_limit if kind == PASSTHROUGH else None)
        if limit is not None and declared_too_large(candidate.request, limit):
            raise too_large(limit)


@dataclass
class JsonBody(_Step):
    """A bridged body is a JSON object within the size limit; its facts are read once here."""

    limit: int

    def admit(self, candidate: Candidate) -> None:
        assert candidate.request is not None and candidate.api is not None
        candidate.body = parse_json_object(candidate.request, self.limit,
                                           untyped=candidate.api.untyped_json)
        candidate.info = candidate.provider.request_info(candidate.api, candidate.body,
                                                         candidate.match.params)


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


class Claim(Protocol):
    """What one policy asks of the state store for one request: operations, and how their
    results read (admission/budgets.py, admission/limits.py)."""

    @property
    def state(self) -> StateStore: ...

    @property
    def ops(self) -> Sequence[AdmitOp]: ...

    def refusal(self, index: int, result: object) -> ResponseError:
        """The client's answer when `ops[index]` refused with `result`."""

    def taken(self, results: Sequence[object]) -> Sequence[Part]:
        """What the request holds, all of `ops` having passed with `results`."""


class Quota(Protocol):
    def claim(self, candidate: Candidate) -> Claim | None:
        """What this request asks (None: no rule applies), or `ResponseError` at once for a
        refusal that needs no state (an unpriced model)."""


def take(claims: Sequence[Claim]) -> Held:
    """Run the claims of one request in order as one batch of their store (budgets and limits
    share the settings' one): what they hold, or the first refusal's error with nothing
    taken."""
    state = claims[0].state
    assert all(claim.state is state for claim in claims), "claims over several stores"
    ops: Sequence[AdmitOp] = claims[0].ops
    if len(claims) > 1:
        ops = [op for claim in claims for op in claim.ops]
    refused, results = state.admit(ops)
    at, parts = 0, []
    for claim in claims:
        n = len(claim.ops)
        if refused is not None and refused < at + n:
            raise claim.refusal(refused - at, results[-1])
        parts += claim.taken(results[at:at + n])
        at += n
    return Held(state, parts)


@dataclass
class Quotas(_Step):
    """Budgets, then rate limits (admission/budgets.py, admission/limits.py). Each says what
    it asks of the state store for this request; the whole is one batch, all or nothing (over
    Redis, one round trip), and a refusal is the first rule's in that order: a spent budget,
    then each limit's concurrency, requests and tokens. What the request holds is one `Held`,
    settled in one batch too when it ends."""

    quotas: Sequence[Quota]

    def admit(self, candidate: Candidate) -> None:
        claims = []
        for quota in self.quotas:
            claim = quota.claim(candidate)
            if claim is not None:
                claims.append(claim)
        if claims:
            candidate.holds.append(take(claims))

    def release(self, candidate: Candidate) -> None:
        for hold in [h for h in candidate.holds if isinstance(h, Held)]:
            hold.release()
            candidate.holds.remove(hold)


class Credential(_Step):
    """The key that goes upstream: a central one from the pool, or the caller's own."""

    def admit(self, candidate: Candidate) -> None:
        assert candidate.request is not None
        pool = candidate.provider.pool
        candidate.credential = resolve_credential(
            candidate.provider, candidate.request.headers, candidate.proxy_token,
            attempt=pool.attempt() if pool else None,
            query=candidate.request.path.partition("?")[2])


@dataclass(frozen=True)
class Pipelines:
    head: Pipeline  # request headers of any flow on a provider host
    bridged: Pipeline  # the body of a bridged request
    passthrough: Pipeline  # a passed-through request (key swap only)
    frame: Pipeline  # a WebSocket `response.create` frame


def pipelines(max_body_bytes: int, breakers: CircuitBreakers | None,
              max_passthrough_body_bytes: int = MAX_PASSTHROUGH_BODY_BYTES, *,
              budgets: Quota | None = None, limits: Quota | None = None,
              secrets: Step | None = None) -> Pipelines:
    circuit = [Circuit(breakers)] if breakers is not None else []
    # Budgets (admission/budgets.py), then rate limits (admission/limits.py), as one step: a
    # spent budget is the answer that lasts, so it is given before a wait that would only
    # lead to it. Secret scanning (admission/secrets.py) comes after them and before the
    # credential: a blocked request costs no key.
    quotas = [quota for quota in (budgets, limits) if quota is not None]
    policies: list[Step] = [Quotas(quotas)] if quotas else []
    policies += [secrets] if secrets is not None else []
    return Pipelines(
        head=Pipeline([Http1Only(), HeaderLimits(), KnownRoute(),
                       DeclaredSize(max_body_bytes, max_passthrough_body_bytes)]),
        bridged=Pipeline([JsonBody(max_body_bytes), *circuit, *policies, Credential()]),
        # Held passthrough JSON bodies (count_tokens carries the conversation) are scanned too.
        passthrough=Pipeline([*([secrets] if secrets is not None else []), Credential()]),
        frame=Pipeline([*circuit, *policies]),
    )
