"""Error shapes other than the default OpenAI envelope (`errors.envelope.ErrorShape`)."""

from __future__ import annotations

from typing import Any

from aibridge.errors.envelope import (
    ANTHROPIC_ERR_TYPE_REQUEST_TOO_LARGE,
    OPENAI_ERRORS,
    ErrorShape,
    ResponseError,
    status_error_type,
)


class AnthropicErrors(ErrorShape):
    """The OpenAI envelope plus a top-level `"type": "error"`: exactly what the Anthropic SDK and
    Claude Code read, and still what the OpenAI SDK reads (it only looks at `error`)."""

    name = "anthropic"
    overload_status = 529

    def body(self, error: ResponseError) -> dict[str, Any]:
        return {"type": "error", **OPENAI_ERRORS.body(error)}

    def type_for_status(self, status: int) -> str:
        if status == 413:
            return ANTHROPIC_ERR_TYPE_REQUEST_TOO_LARGE
        return status_error_type(status)


ANTHROPIC_ERRORS = AnthropicErrors()
