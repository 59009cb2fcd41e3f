"""OpenAI Embeddings (`POST /v1/embeddings`), as OpenAI and OpenAI-compatible providers speak it.

Bridged rather than passed through so that embeddings count toward tokens: `usage.prompt_tokens`
is the input; an embedding has no output tokens. `total_tokens` equals `prompt_tokens` today;
were a provider to count more, the difference is kept as the extra `embedding_other`. The API
never streams: a request's `stream` field means nothing to it, so the request is never taken as
streaming (its answer is one JSON body, read whole for its usage).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from aibridge.providers.base import NO_PARAMS, RequestInfo, WireApi
from aibridge.providers.jsonfields import UNKNOWN_MODEL, _d, _n, _put_extra, _s, _set_error
from aibridge.providers.stream import StreamAccumulator
from aibridge.providers.texts import TextSlot
from aibridge.summary import ResponseSummary


class _NoStream(StreamAccumulator):
    """Embeddings answers are never event streams; one that claims to be is only counted."""

    def _handle(self, name: str | None, obj: dict) -> None:
        pass


class Embeddings(WireApi):
    name = "embeddings"
    title = "OpenAI Embeddings"
    path = "/embeddings"

    def request_info(self, body: object, params: Mapping[str, str] = NO_PARAMS) -> RequestInfo:
        model = _s(body.get("model")) if isinstance(body, dict) else None
        return RequestInfo(model or UNKNOWN_MODEL, False, None)

    def correlating_tool_call_id(self, body: dict) -> str | None:
        return None

    def accumulator(self) -> StreamAccumulator:
        return _NoStream()

    def summarize(self, body: object) -> ResponseSummary:
        s = ResponseSummary()
        if not isinstance(body, dict):
            return s
        if isinstance(error := body.get("error"), dict):
            _set_error(s, _s(error.get("message")), _s(error.get("type")) or _s(error.get("code")))
            return s
        s.model = _s(body.get("model"))
        usage = _d(body.get("usage"))
        s.input_tokens = _n(usage.get("prompt_tokens"))
        _put_extra(s, "embedding_other", _n(usage.get("total_tokens")) - s.input_tokens)
        s.completed = True
        return s

    def last_prompt(self, body: object) -> str | None:
        """The text embedded: one string, or several joined by new lines (token arrays have no
        text). Recorded under the same privacy setting as every prompt."""
        inputs = body.get("input") if isinstance(body, dict) else None
        if isinstance(inputs, str):
            return inputs or None
        if isinstance(inputs, list):
            texts = [item for item in inputs if isinstance(item, str)]
            return "\n".join(texts) or None
        return None

    def recognises(self, name: str | None, obj: object, data: str) -> int:
        return 0

    def texts(self, body: dict) -> Iterator[TextSlot]:
        inputs = body.get("input")
        if isinstance(inputs, str):
            yield TextSlot(body, "input", "input")
        elif isinstance(inputs, list):  # token arrays are numbers: nothing to read
            for index, item in enumerate(inputs):
                if isinstance(item, str):
                    yield TextSlot(inputs, index, "input {index}", index)


EMBEDDINGS = Embeddings()
