"""One place where an interception's life is told to the recorder and to telemetry.

The hooks say what happened (started, failed over, ended) with the objects they have; this
turns that into records (aibridge.recording.records) and hands them to both sinks. Neither sink
may slow or break a request: the recorder only enqueues, telemetry swallows its own errors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
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
    McpRound,
    Passthrough,
    PromptUsage,
    Record,
    SecretFinding,
    TokenUsage,
    ToolUsage,
    truncate_utf8,
)
from aibridge.secrets.findings import LOG, RESPONSE, Finding
from aibridge.secrets.scanner import Scanner
from aibridge.state.ledger import Ledger, Usage
from aibridge.summary import ResponseSummary
from aibridge.textsafe import storable

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
        # The secret scanner of the current configuration (Runtime.apply sets it): what is
        # recorded (prompts, tool arguments, error messages) is masked with it, and model
        # output is scanned for findings.
        self.secrets: Scanner | None = None
        self.scan_responses = True  # [secrets] responses

    def price(self, interception: Interception, summary: ResponseSummary | None) -> Cost:
        """What the interception cost: its tokens at the price of the model that answered (or
        else the one asked for). No usage is $0 for a priced model; no price is UNPRICED."""
        if self.prices is None:
            return UNPRICED
        # A fallback is priced as what served it: the other provider's price of its model.
        served = interception.fallback or interception
        api = PROVIDER_APIS.get(served.provider_type)
        tokens = (Tokens.from_summary(summary, input_includes_cache=api.input_includes_cache)
                  if summary is not None and api is not None else Tokens())
        models = (summary.model, served.model) if summary and summary.model else (
            served.model,)
        return self.prices.cost(served.provider, served.provider_type, models,
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
        prompt = api.last_prompt(body) if self.prompts != "off" else None
        if prompt and self.secrets is not None:
            prompt = self.secrets.mask(prompt)  # before truncation, which could halve one
        prompt, truncated = apply_privacy(prompt, self.prompts, self.prompt_limit)
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
                                       self._mask(call.arguments), now))
        if self.telemetry is not None and time_to_first_token is not None:
            self.telemetry.first_token(interception.id,
                                       interception.started_at + time_to_first_token)
        cred = interception.credential
        record = InterceptionEnded(
            id=interception.id, ended_at=now, outcome=outcome, status=status,
            error_type=error_type, error_message=truncate_utf8(self._mask(error_message)),
            credential_hint=cred.hint, credential_length=cred.length,
            response_model=summary.model if summary else None,
            response_id=summary.response_id if summary else None,
            time_to_first_token=time_to_first_token, key_attempts=key_attempts,
            cost_usd=cost.usd, price_source=cost.source,
            fallback_provider=interception.fallback.provider if interception.fallback else None,
            fallback_model=interception.fallback.model if interception.fallback else None)
        self._submit(record)
        if self.ledger is not None and interception.id in self.ledger:
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

    @property
    def wants_output(self) -> bool:
        """Whether model output is scanned (taps keep what they saw until the stream ends)."""
        return self.secrets is not None and self.scan_responses

    def findings(self, interception: Interception, findings: Sequence[Finding]) -> None:
        """Secrets found in what the interception sent or got (never their values)."""
        now = time.time()
        for f in findings:
            self._submit(SecretFinding(interception.id, f.rule, storable(f.where), f.action,
                                       f.digest, f.source, now))
            if self.telemetry is not None:
                self.telemetry.event(interception.id, "aibridge.secret_detected", {
                    "aibridge.secret.rule": f.rule, "aibridge.secret.action": f.action,
                    "aibridge.secret.source": f.source})

    def scan_output(self, interception: Interception,
                    texts: Iterable[tuple[str, str]]) -> list[Finding]:
        """Model output (`(where, text)` pairs) scanned for secrets: recorded, never changed."""
        if self.secrets is None or not self.scan_responses:
            return []
        found = []
        for where, text in texts:
            if text:
                found += [Finding(hit.rule, where, LOG, hit.digest, RESPONSE)
                          for hit in self.secrets.scan(text)]
        if found:
            self.findings(interception, found)
        return found

    def _mask(self, text: str | None) -> str | None:
        if text is None or self.secrets is None:
            return text
        return self.secrets.mask(text)

    def mcp_round(self, record: McpRound) -> None:
        """One call of a bridge (MCP) tool, run for an interception (its span's child)."""
        self._submit(record)
        if self.telemetry is not None:
            self.telemetry.tool_call(record)

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

