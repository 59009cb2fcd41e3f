"""What one bridged LLM response amounted to: model, ids, token usage, tool calls, outcome.

Filled by `aibridge.providers.parsing` from a whole JSON body or incrementally from SSE events.

Token conventions (values are stored as each API reports them; nothing is subtracted, so
consumers apply their own convention, e.g. OTel's `gen_ai.usage.input_tokens` for Anthropic
is `input_tokens + cache_read_tokens + cache_write_tokens`, while OpenAI's already includes
cached tokens):

- messages (Anthropic): `input_tokens` = usage.input_tokens (excludes cache);
  `cache_read_tokens` = cache_read_input_tokens; `cache_write_tokens` =
  cache_creation_input_tokens; `output_tokens` = output_tokens. When streaming,
  `message_start` gives input, cache and an initial output count; every `message_delta`
  carries the *cumulative* output count, so output is the last value seen (never added to
  `message_start`'s). Input/cache fields on `message_delta` (newer APIs) replace earlier
  values when non-zero. Extras: `web_search_requests` (usage.server_tool_use),
  `cache_ephemeral_1h_input` / `cache_ephemeral_5m_input` (usage.cache_creation).
- chat (OpenAI Chat Completions): `input_tokens` = prompt_tokens (includes cached);
  `cache_read_tokens` = prompt_tokens_details.cached_tokens; `output_tokens` =
  completion_tokens; no cache writes. Extras: `completion_reasoning`, `prompt_audio`,
  `completion_audio`, `completion_accepted_prediction`, `completion_rejected_prediction`.
  Streaming usage arrives in the final chunk only if the request set
  `stream_options.include_usage`.
- responses (OpenAI Responses): `input_tokens` = input_tokens (includes cached);
  `cache_read_tokens` = input_tokens_details.cached_tokens; `output_tokens` =
  output_tokens. Extra: `output_reasoning` (output_tokens_details.reasoning_tokens).
  Streaming usage comes from the terminal `response.completed` (or `.incomplete`/`.failed`).
- generate_content / stream_generate_content (Google Gemini): `input_tokens` =
  usageMetadata.promptTokenCount (includes cached) + toolUsePromptTokenCount;
  `cache_read_tokens` = cachedContentTokenCount; `output_tokens` = candidatesTokenCount +
  thoughtsTokenCount (thinking is billed as output, and OpenAI's output counts reasoning too).
  Extras: `output_reasoning` (thoughtsTokenCount), `tool_use_prompt`. Every streamed chunk
  carries the usage so far; the last one wins.

Extras are only present when > 0.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str  # raw JSON text as the model produced it (compact JSON for whole bodies)


@dataclass
class ResponseSummary:
    model: str | None = None
    response_id: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    extra_tokens: dict[str, int] = field(default_factory=dict)
    tool_calls: list[ToolCall] = field(default_factory=list)
    # Anthropic stop_reason, chat finish_reason, responses status.
    stop_reason: str | None = None
    # An error delivered inside a 2xx body (mid-stream error event, `response.failed`).
    error: str | None = None
    error_type: str | None = None  # the provider's error type/code, e.g. "overloaded_error"
    # Saw the route's terminal marker: message_stop, chat [DONE] or finish_reason,
    # response.completed / response.incomplete.
    completed: bool = False
    events: int = 0
    text_chars: int = 0  # assembled output text, excluding thinking/reasoning and tool input

    def to_dict(self) -> dict:
        """`dataclasses.asdict(self)`, built directly (asdict deep-copies field by field)."""
        out = {name: getattr(self, name) for name in _SUMMARY_FIELDS}
        out["extra_tokens"] = dict(self.extra_tokens)
        out["tool_calls"] = [{"id": c.id, "name": c.name, "arguments": c.arguments}
                             for c in self.tool_calls]
        return out


_SUMMARY_FIELDS = tuple(f.name for f in dataclasses.fields(ResponseSummary))
