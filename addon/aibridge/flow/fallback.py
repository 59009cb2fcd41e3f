"""A fallback across providers in an interception's life (the mechanism: upstream.fallback).

`divert` runs where admission refused a request because the provider cannot serve it (every
central key cooling, the circuit open): the flow goes to the fallback's provider instead,
admitted there by the same pipeline (its circuit, budgets, limits and credential).
`rescue` runs after the provider answered with a 5xx (or refused every key), or could not be
reached: the bridge asks the fallback's provider itself and its answer replaces the first.

Either way it stays one interception: the provider and model asked, plus `fallback` naming the
provider and model that served it (recorded, priced as that model, shown in the log line).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import httpx2
from mitmproxy import http

from aibridge.admission.credential import resolve_credential
from aibridge.admission.pipeline import Candidate, Pipeline
from aibridge.errors.envelope import ResponseError
from aibridge.flow.exchange import Exchange, Phase
from aibridge.flow.start import open_interception
from aibridge.intercept import Fallback, Interception
from aibridge.observe import flowview
from aibridge.observe.reporting import Reporter
from aibridge.providers import BRIDGED, ProviderRegistry
from aibridge.state.ledger import Hold
from aibridge.streaming.tap import StreamTap
from aibridge.upstream import fallback
from aibridge.upstream.fallback import Diverted, Route, Routes

__all__ = ["Routes", "after_answer", "answered", "divert", "relay", "rescue", "routes_of"]
from aibridge.upstream.rewrite import rewrite_for_upstream
from aibridge.upstream.scrub import redact, sent_secrets

logger = logging.getLogger("aibridge")

_cache: list[tuple[ProviderRegistry, object, Routes]] = []


def routes_of(registry: ProviderRegistry, configs: list) -> Routes:
    """The fallbacks of the current settings, resolved once per (re)load."""
    if _cache and _cache[0][0] is registry and _cache[0][1] is configs:
        return _cache[0][2]
    resolved = fallback.routes(configs, registry)
    _cache[:] = [(registry, configs, resolved)]
    return resolved


def _route(routes: Routes, ex: Exchange, trigger: str | None) -> Route | None:
    route = routes.for_provider(ex.provider)
    if route is None or trigger is None or trigger not in route.on or ex.fallback is not None:
        return None
    return route


def divert(flow: http.HTTPFlow, ex: Exchange, candidate: Candidate, error: ResponseError,
           routes: Routes, pipeline: Pipeline, reporter: Reporter,
           hold: Callable[[Interception | None, Sequence[Hold]], None]) -> bool:
    """Send a request admission refused to the fallback's provider instead; False when no
    fallback applies (the refusal stands)."""
    trigger = fallback.trigger_of(error, candidate.circuit_open)
    route = _route(routes, ex, trigger)
    info, body = candidate.info, candidate.body
    if route is None or info is None or not isinstance(body, dict):
        return False
    model = route.model_for(info.model)
    if model is None:
        return False
    request = flow.request.copy()
    fallback.translate(request, body, model, info.streaming)
    match = route.target.match("POST", request.path)
    if match.kind != BRIDGED:
        return False
    target = Candidate(route.target, match, request.path.split("?", 1)[0], ex.caller.token,
                       request=request, actor=ex.caller.actor)
    try:
        pipeline.admit(target)
    except ResponseError as e:
        logger.warning(f"aibridge: {ex.provider.name} cannot serve ({trigger}); fallback "
                       f"{route.target.name} refused too: {e.message}")
        return False
    cred = target.credential
    assert cred is not None
    ex.admission, ex.credential, ex.info = target.circuit, cred, cred.info
    ex.fallback = Diverted(route, model, info.streaming)
    open_interception(reporter, flow, ex, info, body, cred.info)
    assert ex.interception is not None
    ex.interception.fallback = Fallback(route.target.name, route.target.type, model)
    hold(ex.interception, target.holds)
    flow.request.path = request.path
    flow.request.headers = request.headers
    flow.request.raw_content = request.raw_content
    rewrite_for_upstream(flow.request, route.target, cred, ex.caller.actor, route.upstream)
    flowview.sent(flow, cred.info, ex.interception)
    ex.phase = Phase.FORWARDED
    logger.warning(f"aibridge: {ex.provider.name} cannot serve {info.model} ({trigger}): "
                   f"{ex.interception.id} goes to {route.target.name} as {model}")
    return True


def relay(response: http.Response, ex: Exchange, tap: StreamTap) -> bool:
    """A diverted stream's answer: re-emitted as SSE through `tap` (set as the flow's stream).
    False for anything else (a whole answer, translated in `answered`)."""
    if ex.fallback is None:
        return False
    if not (200 <= response.status_code < 300
            and response.headers.get("content-type", "").startswith(fallback.EVENTSTREAM)):
        return False
    fallback.answer_headers(response, ex.fallback.route.target, sse=True)
    ex.tap = tap
    response.stream = fallback.SseRelay(tap)
    return True


def answered(response: http.Response, ex: Exchange) -> None:
    """A diverted request's whole answer as the Anthropic answer the client expects."""
    if ex.fallback is not None and not response.stream:
        fallback.translate_answer(response, ex.fallback.route.target)


def after_answer(response: http.Response, ex: Exchange) -> str | None:
    """Why the provider's answer means it cannot serve: a 5xx, or every key refused."""
    if ex.fallback is not None or ex.interception is None:
        return None
    if ex.pool_error is not None:
        return fallback.ALL_KEYS_COOLING
    if response.status_code >= 500 and not ex.synthesized:
        return fallback.SERVER_ERROR
    return None


async def rescue(flow: http.HTTPFlow, ex: Exchange, trigger: str | None, routes: Routes,
                 client: httpx2.AsyncClient) -> http.Response | None:
    """The fallback provider's answer to the request, asked by the bridge itself, translated;
    None when no fallback applies or it could not answer either (the first answer stands)."""
    route = _route(routes, ex, trigger)
    interception = ex.interception
    if route is None or interception is None or ex.api is None:
        return None
    model = route.model_for(interception.model)
    body = fallback.request_body(flow.request)
    if model is None or body is None:
        return None
    request = flow.request.copy()
    fallback.translate(request, body, model, interception.streaming)
    target = route.target
    try:
        cred = resolve_credential(target, request.headers, ex.caller.token,
                                  attempt=target.pool.attempt() if target.pool else None)
    except ResponseError as e:
        logger.warning(f"aibridge: fallback {target.name}: {e.message}")
        return None
    rewrite_for_upstream(request, target, cred, ex.caller.actor, route.upstream)
    try:
        answer = await fallback.send(client, request)
    except httpx2.HTTPError as e:
        logger.warning(f"aibridge: fallback {target.name} unreachable: {type(e).__name__}")
        return None
    finally:
        if cred.attempt is not None:
            cred.attempt.finish()
    if cred.key is not None and target.pool is not None:
        target.pool.mark(cred.key, answer.status_code, answer.headers)
    redact(answer, sent_secrets(cred))
    streamed = 200 <= answer.status_code < 300 and answer.headers.get(
        "content-type", "").startswith(fallback.EVENTSTREAM)
    if streamed:
        ex.tap = StreamTap(ex.api, None)
        fallback.stream_answer(answer, target, ex.tap)
    else:
        fallback.translate_answer(answer, target)
    ex.fallback = Diverted(route, model, interception.streaming)
    interception.fallback = Fallback(target.name, target.type, model)
    interception.credential = ex.info = cred.info
    flowview.sent(flow, cred.info, interception)
    logger.warning(f"aibridge: {ex.provider.name} cannot serve {interception.model} "
                   f"({trigger}): {interception.id} answered by {target.name} as {model}")
    return answer
