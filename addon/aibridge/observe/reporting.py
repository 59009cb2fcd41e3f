"""One place where an interception's life is told to the recorder and to telemetry.

The hooks say what happened (started, failed over, ended) with the objects they have; this
turns that into records (aibridge.recording.records) and hands them to both sinks. Neither sink
may slow or break a request: the recorder only enqueues, telemetry swallows its own errors.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

from aibridge.intercept import Interception
from aibridge.observe.clients import ClientInfo
from aibridge.observe.prompts import apply_privacy
from aibridge.observe.telemetry import Telemetry
from aibridge.pricing import UNPRICED, Cost, PriceBook, Tokens
from aibridge.providers.base import WireApi
from aibridge.providers.catalog import PROVIDER_APIS
from aibridge.recording.records import (
    InterceptionEnded,
    InterceptionStarted,
    Passthrough,
    PromptUsage,
    Record,
    TokenUsage,
    ToolUsage,
    truncate_utf8,
)
from aibridge.state.ledger import Ledger, Usage
from aibridge.summary import ResponseSummary

logger = logging.getLogger("aibridge")


class Sink(Protocol):
    def submit(self, record: Record) -> None: ...


class Reporter:
    def __init__(self, recorder: Sink | None, telemetry: Telemetry | None, *,
                 prompts: str = "truncated", prompt_limit: int = 2000,
                 prices: PriceBook | None = None) -> None:
        self.recorder, self.telemetry = recorder, telemetry
        self.prompts, self.prompt_limit = prompts, prompt_limit
        # The current configuration's prices (Runtime.apply sets them on every (re)load).
        self.prices = prices
        # What admitted interceptions hold (budget reservations, concurrency slots), settled
        # here when each ends; the runtime's, set by Runtime.apply.
        self.ledger: Ledger | None = None

    def price(self, interception: Interception, summary: ResponseSummary | None) -> Cost:
        """What the interception cost: its tokens at the price of the model that answered (or
        else the one asked for). No usage is $0 for a priced model; no price is UNPRICED."""
        if self.prices is None:
            return UNPRICED
        api = PROVIDER_APIS.get(interception.provider_type)
        tokens = (Tokens.from_summary(summary, input_includes_cache=api.input_includes_cache)
                  if summary is not None and api is not None else Tokens())
        models = (summary.model, interception.model) if summary and summary.model else (
            interception.model,)
        return self.prices.cost(interception.provider, interception.provider_type, models,
                                tokens, at=interception.started_at)

    def started(self, interception: Interception, *, api: WireApi, transport: str,
                client: ClientInfo, user_agent: str | None, body: object,
                server: tuple[str, int]) -> None:
        cred = interception.credential
        record = InterceptionStarted(
            id=interception.id, started_at=interception.started_at,
            actor_id=interception.actor.id, actor_metadata=dict(interception.actor.metadata),
            provider=interception.provider, provider_type=interception.provider_type,
            route=interception.route, model=interception.model,
            streaming=interception.streaming, transport=transport, client=client.name,
            client_session_id=client.session_id, user_agent=user_agent,
            credential_kind=str(cred.kind), credential_hint=cred.hint,
            credential_length=cred.length,
            correlating_tool_call_id=interception.correlating_tool_call_id)
        self._submit(record)
        if self.telemetry is not None:
            self.telemetry.interception_started(record, *server)
        prompt, truncated = apply_privacy(
            api.last_prompt(body), self.prompts,
            self.prompt_limit)
        if prompt:
            self._submit(PromptUsage(interception.id, None, prompt, truncated, time.time()))

    def failover(self, interception: Interception, from_hint: str, to_hint: str,
                 reason: str) -> None:
        if self.telemetry is not None:
            self.telemetry.failover(interception.id, from_hint, to_hint, reason)

    def ended(self, interception: Interception, *, outcome: str, status: int | None,
              error_type: str | None, error_message: str | None,
              summary: ResponseSummary | None, key_attempts: int,
              time_to_first_token: float | None, cost: Cost | None = None) -> None:
        """`cost`: as `price` gave it (the caller showed it already); None: priced here."""
        now = time.time()
        if cost is None:
            cost = self.price(interception, summary)
        if summary is not None:
            tokens = TokenUsage(
                interception.id, summary.response_id, summary.input_tokens,
                summary.output_tokens, summary.cache_read_tokens, summary.cache_write_tokens,
                dict(summary.extra_tokens), now)
            if any((tokens.input_tokens, tokens.output_tokens, tokens.cache_read_tokens,
                    tokens.cache_write_tokens)):
                self._submit(tokens)
                if self.telemetry is not None:
                    self.telemetry.usage(tokens)
            for call in summary.tool_calls:
                self._submit(ToolUsage(interception.id, summary.response_id, call.name, call.id,
                                       call.arguments, now))
        if self.telemetry is not None and time_to_first_token is not None:
            self.telemetry.first_token(interception.id,
                                       interception.started_at + time_to_first_token)
        cred = interception.credential
        record = InterceptionEnded(
            id=interception.id, ended_at=now, outcome=outcome, status=status,
            error_type=error_type, error_message=truncate_utf8(error_message),
            credential_hint=cred.hint, credential_length=cred.length,
            response_model=summary.model if summary else None,
            response_id=summary.response_id if summary else None,
            time_to_first_token=time_to_first_token, key_attempts=key_attempts,
            cost_usd=cost.usd, price_source=cost.source)
        self._submit(record)
        if self.ledger is not None:
            self._settle(interception, summary, cost, now)
        if self.telemetry is not None:
            self.telemetry.interception_ended(record)

    def _settle(self, interception: Interception, summary: ResponseSummary | None, cost: Cost,
                now: float) -> None:
        """Budgets are charged the recorded cost, token limits input (cached or not) plus
        output; what the admission steps held is given back. Before the span ends, so that a
        budget threshold this request crossed is an event on it."""
        assert self.ledger is not None
        try:
            api = PROVIDER_APIS.get(interception.provider_type)
            tokens = 0
            if summary is not None and api is not None:
                used = Tokens.from_summary(summary, input_includes_cache=api.input_includes_cache)
                tokens = used.total_input + used.output
            notices = self.ledger.settle(interception.id, Usage(cost.usd, tokens, now))
        except Exception:  # a bug here must not cost the record or the client anything
            logger.exception("aibridge: settling admission holds failed")
            return
        if self.telemetry is not None:
            for notice in notices:
                self.telemetry.event(interception.id, notice.name, notice.attributes)

    def passthrough(self, record: Passthrough) -> None:
        """A passed-through (or refused) request on a provider path that is no model call."""
        self._submit(record)

    def _submit(self, record: Record) -> None:
        if self.recorder is None:
            return
        try:
            self.recorder.submit(record)
        except Exception:  # the recorder promises not to raise; a bug must not cost a request
            logger.exception("aibridge: recorder failed to accept a record")

