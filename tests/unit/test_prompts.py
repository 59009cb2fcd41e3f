"""Last-user-prompt extraction (reference §7.6) and the privacy setting."""

import pytest

from aibridge.observe.prompts import apply_privacy
from aibridge.providers.catalog import wire_api


def user(content: object) -> dict:
    return {"role": "user", "content": content}


def text(value: str, kind: str = "text") -> dict:
    return {"type": kind, "text": value}


IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}
TOOL_RESULT = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "42"}
ASSISTANT = {"role": "assistant", "content": "sure"}


@pytest.mark.parametrize(
    ("messages", "prompt"),
    [
        ([user("hello")], "hello"),
        ([user("old"), ASSISTANT, user("new")], "new"),
        # The last text block, not the first (earlier ones are attached context).
        ([user([text("<system-reminder>ctx</system-reminder>"), text("fix the bug")])],
         "fix the bug"),
        ([user([text("look at this"), IMAGE])], "look at this"),
        ([user([IMAGE])], None),
        # A trailing system message is stepped over exactly once ...
        ([user("hi"), {"role": "system", "content": "be brief"}], "hi"),
        # ... and never twice, nor over an assistant turn.
        ([user("hi"), {"role": "system", "content": "a"}, {"role": "system", "content": "b"}],
         None),
        ([user("hi"), ASSISTANT, {"role": "system", "content": "a"}], None),
        # A lone system message has nothing before it.
        ([{"role": "system", "content": "a"}], None),
        # Only the final turn counts: a turn of tool results has no prompt, even with an
        # earlier user message in history.
        ([user("run it"), ASSISTANT, user([TOOL_RESULT])], None),
        ([user("run it"), ASSISTANT], None),
        ([user("")], None),
        ([user([text("")])], None),
        ([user([{"type": "text"}])], None),
        ([user(None)], None),
        ([user([None, "raw", text("ok")])], "ok"),
        ([], None),
        (["not a message"], None),
        (None, None),
    ],
)
def test_messages(messages: object, prompt: str | None) -> None:
    assert wire_api("messages").last_prompt({"messages": messages}) == prompt


@pytest.mark.parametrize(
    ("messages", "prompt"),
    [
        ([{"role": "system", "content": "sys"}, user("hello")], "hello"),
        # The last user message, even when tool output follows it.
        ([user("first"), ASSISTANT, user("second"), ASSISTANT,
          {"role": "tool", "tool_call_id": "call_1", "content": "42"}], "second"),
        ([user([text("a"), {"type": "image_url", "image_url": {"url": "data:,"}},
                text("b")])], "b"),
        ([user([{"type": "image_url", "image_url": {"url": "data:,"}}])], None),
        ([user([{"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}}])], None),
        ([{"role": "system", "content": "sys"}], None),
        ([user("")], None),
        ([], None),
        ("hello", None),
    ],
)
def test_chat(messages: object, prompt: str | None) -> None:
    assert wire_api("chat").last_prompt({"messages": messages}) == prompt


def item(role: str, content: object) -> dict:
    return {"type": "message", "role": role, "content": content}


@pytest.mark.parametrize(
    ("input_", "prompt"),
    [
        ("just a string", "just a string"),
        ("", None),
        ([item("user", "hello")], "hello"),
        ([{"role": "user", "content": "no type field"}], "no type field"),
        ([item("user", [text("a", "input_text"), {"type": "input_image", "image_url": "x"},
                        text("b", "input_text")])], "b"),
        ([item("user", [{"type": "input_image", "image_url": "x"}])], None),
        # Plain `text` parts are output-shaped, not input.
        ([item("user", [text("a")])], None),
        ([item("developer", "dev"), item("user", "q"),
          {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
          {"type": "function_call_output", "call_id": "c", "output": "42"}], "q"),
        ([item("developer", "dev")], None),
        ([], None),
        (None, None),
        (42, None),
    ],
)
def test_responses(input_: object, prompt: str | None) -> None:
    assert wire_api("responses").last_prompt({"input": input_}) == prompt


@pytest.mark.parametrize("body", [None, [], "text", {"messages": [user("x")]}])
def test_unknown_route_or_body(body: object) -> None:
    assert wire_api("moderations") is None  # an unknown route has no prompt to find
    if not isinstance(body, dict):
        assert wire_api("messages").last_prompt(body) is None


@pytest.mark.parametrize(
    ("prompt", "mode", "limit", "expected"),
    [
        ("hello world", "off", 5, (None, False)),
        ("hello world", "full", 5, ("hello world", False)),
        ("hello world", "truncated", 5, ("hello", True)),
        ("hello", "truncated", 5, ("hello", False)),
        ("héllo wörld", "truncated", 7, ("héllo w", True)),  # characters, not bytes
        ("hello", "truncated", 0, ("", True)),
        (None, "full", 5, (None, False)),
        (None, "truncated", 5, (None, False)),
    ],
)
def test_apply_privacy(prompt: str | None, mode: str, limit: int,
                       expected: tuple[str | None, bool]) -> None:
    assert apply_privacy(prompt, mode, limit) == expected


def test_apply_privacy_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError, match="privacy mode"):
        apply_privacy("x", "partial", 5)
