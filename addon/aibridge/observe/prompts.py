"""The user's last prompt in a bridged request (reference §7.6), and the privacy setting applied
to it before it is recorded.

Pure functions over the decoded JSON body; anything malformed yields None rather than raising,
because recording must never fail a request. Only text is recorded: a turn made of images or
tool results alone has no prompt. An empty text counts as no prompt (the reference counts only
non-empty prompts, and an empty record tells nobody anything).
"""

from __future__ import annotations

PRIVACY_MODES = ("off", "truncated", "full")


def last_user_prompt(route: str, body: object) -> str | None:
    """The prompt for `route` ("messages", "chat" or "responses"); None when there is none."""
    if not isinstance(body, dict):
        return None
    if route == "messages":
        text = _messages_prompt(body.get("messages"))
    elif route == "chat":
        text = _chat_prompt(body.get("messages"))
    elif route == "responses":
        text = _responses_prompt(body.get("input"))
    else:
        return None
    return text or None


def apply_privacy(prompt: str | None, mode: str, limit: int) -> tuple[str | None, bool]:
    """(what to record, whether it was cut short). "off" records nothing, "truncated" the first
    `limit` characters, "full" everything. An unknown mode is a configuration bug: ValueError."""
    if mode not in PRIVACY_MODES:
        raise ValueError(f"unknown prompt privacy mode {mode!r}; expected one of {PRIVACY_MODES}")
    if prompt is None or mode == "off":
        return None, False
    if mode == "full" or len(prompt) <= limit:
        return prompt, False
    return prompt[: max(limit, 0)], True


def _messages_prompt(messages: object) -> str | None:
    # Anthropic: only the final turn counts. Some clients append a system-role message after
    # the user's turn, so step back over exactly one; an earlier user turn is history, not a prompt.
    if not isinstance(messages, list) or not messages:
        return None
    last = messages[-1]
    if _role(last) == "system" and len(messages) >= 2:
        last = messages[-2]
    if _role(last) != "user":
        return None
    return _content_text(last.get("content"), "text")


def _chat_prompt(messages: object) -> str | None:
    # Chat: the last user message, wherever it is (tool and assistant messages may follow it).
    if not isinstance(messages, list):
        return None
    for message in reversed(messages):
        if _role(message) == "user":
            return _content_text(message.get("content"), "text")
    return None


def _responses_prompt(items: object) -> str | None:
    # Responses: `input` is either the prompt itself or a list of items (messages, tool outputs).
    if isinstance(items, str):
        return items
    if not isinstance(items, list):
        return None
    for item in reversed(items):
        if _role(item) == "user":
            return _content_text(item.get("content"), "input_text")
    return None


def _role(message: object) -> str | None:
    return message.get("role") if isinstance(message, dict) else None


def _content_text(content: object, text_type: str) -> str | None:
    """String content, or the text of the LAST block of `text_type` (earlier blocks are usually
    attached context such as files or reminders; the typed prompt comes last)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    for block in reversed(content):
        if isinstance(block, dict) and block.get("type") == text_type:
            text = block.get("text")
            return text if isinstance(text, str) else None
    return None
