"""ResponseSummary.to_dict is dataclasses.asdict, key order included."""

import dataclasses

from aibridge.summary import ResponseSummary, ToolCall


def test_to_dict_equals_asdict():
    empty = ResponseSummary()
    full = ResponseSummary(model="m", response_id="r", input_tokens=3, output_tokens=4,
                           cache_read_tokens=1, cache_write_tokens=2,
                           extra_tokens={"completion_reasoning": 5},
                           tool_calls=[ToolCall("c1", "f", '{"a":1}'), ToolCall("", "", "")],
                           stop_reason="stop", error="boom", error_type="overloaded_error",
                           completed=True, events=9, text_chars=12)
    for summary in (empty, full):
        got, want = summary.to_dict(), dataclasses.asdict(summary)
        assert got == want
        assert list(got) == list(want)
        assert got["extra_tokens"] is not summary.extra_tokens  # a copy, as asdict makes
