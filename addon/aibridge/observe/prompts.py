"""The privacy setting applied to a user's last prompt before it is recorded (docs/behaviour.md
§10).

Each provider API finds the prompt (`WireApi.last_prompt`): only text is recorded, a turn made
of images or tool results alone has no prompt, and an empty text counts as none (an empty record
tells nobody anything). Anything malformed yields None, because recording must never fail a
request.
"""

from __future__ import annotations

PRIVACY_MODES = ("off", "truncated", "full")


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
