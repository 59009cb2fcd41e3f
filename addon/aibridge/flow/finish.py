"""Where every interception ends: response, upstream failure, client cancel, refusal, or a
WebSocket response's last frame. The outcome and the recorded error category are decided here;
`observe.flowview` only shows them (flow metadata, mitmweb comment, access log line)."""

from __future__ import annotations

import logging

from mitmproxy import http

from aibridge.errors import categories
from aibridge.errors.envelope import ResponseError
from aibridge.errors.proxy_failures import is_client_cancel
from aibridge.flow import passthrough
from aibridge.flow.exchange import Exchange, Phase
from aibridge.intercept import Interception
from aibridge.model import KeyPoolError
from aibridge.observe import flowview
from aibridge.observe.reporting import Reporter
from aibridge.providers.base import WireApi
from aibridge.providers.catalog import PROVIDER_APIS
from aibridge.streaming import output
from aibridge.streaming.socket_session import Finished
from aibridge.streaming.tap import StreamTap
from aibridge.summary import ResponseSummary
from aibridge.upstream import scrub

logger = logging.getLogger("aibridge")

COMPLETED, FAILED, CANCELLED, REJECTED = "completed", "failed", "cancelled", "rejected"
WARMUP = "warmup"  # a Responses `generate: false` create: nothing generated, nothing failed


def refuse(reporter: Reporter, flow: http.HTTPFlow, ex: Exchange, error: ResponseError) -> None:
    """Answer with a bridge-made error instead of going upstream; ends the interception."""
    scrub.mask_flow(flow)  # never forwarded: the client's credentials are kept as hints only
    mask_stored(flow, ex)
    flow.response = error.to_response(ex.provider.api.errors)
    ex.synthesized = True
    if isinstance(error.__cause__, KeyPoolError):
        ex.pool_error = str(error.__cause__.kind)
    flowview.rejected(flow, error)
    if ex.interception is not None:
        reporter.ended(
            ex.interception, outcome=REJECTED, status=error.status,
            error_type=categories.error_type(
                status=error.status, overload_status=ex.provider.api.errors.overload_status,
                circuit_open=ex.circuit_open, key_pool_kind=ex.pool_error),
            error_message=error.message, summary=None, key_attempts=0,
            time_to_first_token=None)
    elif passthrough.recorded(ex):  # its line is the one `flowview.rejected` wrote
        passthrough.ended(reporter, flow, ex, outcome=REJECTED, status=error.status,
                          reason=error.message, sent=False, log=False)
    ex.phase = Phase.ENDED


def end(reporter: Reporter, flow: http.HTTPFlow, ex: Exchange,
        client_status: int | None = None) -> None:
    """The flow is over (response or error hook). `client_status` is what the client got when
    the provider sent nothing."""
    ex.stop_timer()
    if ex.ended:
        return
    ex.phase = Phase.ENDED
    # Whatever credential the flow still holds (e.g. an untouched route's own) becomes a hint,
    # in the request and in an answer that echoes it.
    scrub.redact(flow.response, scrub.mask_flow(flow))
    mask_stored(flow, ex)
    outcome, reason = outcome_of(flow, ex.tap, timed_out=ex.timed_out is not None)
    interception = ex.interception
    if interception is None:
        flowview.outcome(flow, outcome, reason)
        if passthrough.recorded(ex):
            passthrough.ended(reporter, flow, ex, outcome=outcome, reason=reason, sent=True,
                              status=flow.response.status_code if flow.response else client_status)
        return
    body = output.answer_json(flow.response) if ex.tap is None and ex.api is not None else None
    summary = summary_of(flow, ex.tap, ex.api, body)
    status = flow.response.status_code if flow.response else client_status
    kind = None
    if outcome != COMPLETED:
        kind = categories.error_type(
            status=status, overload_status=ex.provider.api.errors.overload_status,
            timed_out=ex.timed_out is not None, cancelled=outcome == CANCELLED,
            circuit_open=ex.circuit_open, key_pool_kind=ex.pool_error,
            upstream_error_type=summary.error_type if summary else None)
        if outcome == FAILED and kind is None:
            kind = categories.SERVER_ERROR  # e.g. a stream the provider broke after a 200
    ttft = None
    if ex.tap is not None and ex.tap.first_token_at is not None:
        ttft = max(0.0, ex.tap.first_token_at - ex.started_mono)
    if reporter.wants_output and summary is not None:
        flowview.secrets(flow, reporter.scan_output(
            interception, output.texts(ex.api, ex.tap, summary, body)))
    cost = reporter.price(interception, summary)
    flowview.ended(flow, interception, summary, outcome, reason, cost)
    cred = ex.credential
    reporter.ended(
        interception, outcome=outcome, status=status, error_type=kind, error_message=reason,
        summary=summary, key_attempts=cred.attempt.attempts if cred and cred.attempt else 0,
        time_to_first_token=ttft, cost=cost)


def end_socket_response(reporter: Reporter, flow: http.HTTPFlow, done: Finished) -> None:
    """One response on a WebSocket is over."""
    interception = done.interception
    if done.output is not None:
        flowview.secrets(flow, reporter.scan_output(
            interception, output.stream_texts(done.output, done.summary)))
    cost = reporter.price(interception, done.summary)
    flowview.socket_interception(flow, interception, done.summary, done.outcome, done.reason,
                                 cost)
    kind = None
    if done.outcome not in (COMPLETED, WARMUP):
        kind = categories.error_type(
            status=None, overload_status=_overload_status(interception),
            upstream_error_type=done.summary.error_type)
    reporter.ended(interception, outcome=done.outcome, status=101, error_type=kind,
                   error_message=done.reason, summary=done.summary, key_attempts=0,
                   time_to_first_token=done.time_to_first_token, cost=cost)


def refuse_socket_response(reporter: Reporter, flow: http.HTTPFlow,
                           interception: Interception, error: ResponseError,
                           circuit_open: bool) -> None:
    """A `response.create` frame the admission pipeline refused."""
    flowview.socket_interception(flow, interception, ResponseSummary(), REJECTED, error.message)
    reporter.ended(
        interception, outcome=REJECTED, status=error.status,
        error_type=categories.error_type(status=error.status,
                                         overload_status=_overload_status(interception),
                                         circuit_open=circuit_open),
        error_message=error.message, summary=None, key_attempts=0, time_to_first_token=None)


def mask_stored(flow: http.HTTPFlow, ex: Exchange) -> None:
    """The request body the flow keeps no longer holds a secret scanning let through (log)
    or refused (block): sent or not, only the placeholders stay."""
    mask, ex.mask_stored = ex.mask_stored, None
    if mask is None:
        return
    try:
        mask(flow.request)
    except Exception:  # a bug here must not cost the client its answer
        logger.exception("aibridge: masking secrets in the kept request failed")


def outcome_of(flow: http.HTTPFlow, tap: StreamTap | None, *,
               timed_out: bool = False) -> tuple[str, str | None]:
    if flow.error is not None:
        if not timed_out and is_client_cancel(flow.error.msg):
            if tap is not None and tap.summary.completed and not tap.summary.error:
                # The OpenAI SDK hangs up at `data: [DONE]`, sometimes before the last
                # (empty) chunk arrives: the client got everything.
                return COMPLETED, None
            return CANCELLED, flow.error.msg
        return FAILED, flow.error.msg
    response = flow.response
    if response is None:
        return FAILED, "no response"
    if response.status_code >= 400:
        return FAILED, f"upstream status {response.status_code}"
    if tap is not None and tap.summary.error:
        return FAILED, tap.summary.error
    return COMPLETED, None


def summary_of(flow: http.HTTPFlow, tap: StreamTap | None, api: WireApi | None,
               body: object | None) -> ResponseSummary | None:
    """`body`: the answer's JSON (`output.answer_json`), None when it has none."""
    if tap is not None:
        return tap.summary
    if api is None or body is None:
        return None
    return api.summarize(body)


def _overload_status(interception: Interception) -> int | None:
    api = PROVIDER_APIS.get(interception.provider_type)
    return api.errors.overload_status if api else None
