"""Fast path for streamed tokens: skip JSON parsing of an event that repeats the previous one's
bytes except for its text.

The plain path is `StreamAccumulator.feed` (every event parsed in full); `feed_raw` uses this
shortcut where it applies. tests/unit/test_parsing.py feeds the same streams through both and
requires identical summaries.
"""

from __future__ import annotations

import re

from aibridge.providers.jsonfields import _jiter_loads

# Providers stream one JSON object per token and, from token to token, repeat the same
# bytes with only the text changed. `Shortcut` lets such events skip JSON parsing.
_KEY_COLON_QUOTE = re.compile(rb'\s*:\s*"')
_STRING_BODY = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)
_PADDING_KEY = b'"obfuscation"'  # OpenAI's random padding against length side channels
_PADDING = re.compile(_PADDING_KEY + rb'\s*:\s*"')
SHORTCUT_BUILDS = 32  # per stream: bounds the cost on streams that never repeat


class Shortcut:
    """A text-only event the full parser has just handled, with its text string cut out.

    An event whose bytes are `prefix`, a JSON string body, then the template's remaining
    bytes (`suffix`; or `middle`, alphanumeric padding and `suffix` when the template had an
    "obfuscation" string after the text) parses to the template's object with only that
    string changed, so its effect is known without parsing it: output, plus the string's
    exact length in text_chars or the string appended to a tool call's arguments, and the
    string added to its block of the output text (`block`) when the accumulator assembles
    it. Only the string literal itself is decoded (which also validates it).

    `build` only accepts templates where this reasoning holds: no backslash outside the
    string (so no key is spelled with escapes), the string's key occurring exactly once,
    and the decoded literal equal to the value the parser saw under that key.
    """

    __slots__ = ("always_output", "args_key", "block", "counts", "middle", "prefix", "start",
                 "suffix")

    def __init__(self, prefix: bytes, middle: bytes | None, suffix: bytes) -> None:
        self.prefix = prefix  # ends with the string's opening quote
        self.start = len(prefix)
        self.middle = middle  # from the string's closing quote to the padding's opening one
        self.suffix = suffix  # from the closing quote (of the padding, if any) to the end
        self.counts = False  # the string is output text: add its length to text_chars
        self.always_output = False  # output (and its block opened) even if the string is empty
        self.args_key: tuple[int, ...] | None = None  # the string is a tool-arguments piece
        # The string is output text of this (label, index) block (providers.assembly).
        self.block: tuple[str, int] | None = None

    @staticmethod
    def build(data: bytes, key: bytes, value: str) -> Shortcut | None:
        if _jiter_loads is None:
            return None
        quoted = b'"' + key + b'"'
        at = data.find(quoted)
        if at < 0 or data.count(quoted) != 1:
            return None
        if not (colon := _KEY_COLON_QUOTE.match(data, at + len(quoted))):
            return None
        start = colon.end()
        close = _STRING_BODY.match(data, start).end()
        if close >= len(data) or data.find(92, 0, start) >= 0 or data.find(92, close) >= 0:
            return None
        try:
            if _jiter_loads(data[start - 1 : close + 1]) != value:
                return None
        except Exception:
            return None
        padding = _PADDING.search(data, close)
        if padding is None:
            if data.find(_PADDING_KEY) >= 0:  # before the text: it would differ every time
                return None
            return Shortcut(data[:start], None, data[close:])
        pad_start = padding.end()
        pad_end = data.find(34, pad_start)
        if pad_end < 0 or data.count(_PADDING_KEY) != 1:
            return None
        pad = data[pad_start:pad_end]
        if pad and not pad.isalnum():
            return None
        return Shortcut(data[:start], data[close:pad_start], data[pad_end:])

    def string(self, data: bytes) -> str | None:
        """The string in `data` (which starts with `prefix`) if it fits the template."""
        start = self.start
        close = data.find(34, start)
        if close < 0:
            return None
        if data[close - 1] == 92:  # perhaps an escaped quote: find the string's real end
            close = _STRING_BODY.match(data, start).end()  # type: ignore[union-attr]
            if close >= len(data):
                return None
        suffix = self.suffix
        middle = self.middle
        if middle is None:
            if len(data) - close != len(suffix) or not data.endswith(suffix):
                return None
        else:
            pad_start = close + len(middle)
            pad_end = len(data) - len(suffix)
            if pad_end < pad_start or not data.startswith(middle, close):
                return None
            if not data.endswith(suffix):
                return None
            if pad_end > pad_start and not data[pad_start:pad_end].isalnum():
                return None
        try:  # validates the literal: escapes, control characters, UTF-8
            return _jiter_loads(data[start - 1 : close + 1])  # type: ignore[misc]
        except Exception:
            return None

