"""The output text of a streamed answer, put together while it streams.

An API's accumulator, when asked to (`StreamAccumulator.collect_text`), adds each piece of
output text it reads to a block named (label, index): label "text", "thinking" or "refusal",
index the API's own block number (a choice, a content block, an output item and content part,
a candidate). `assembled` joins the blocks the way viewers and secret scanning read them
(`jsonfields._join`: blocks of one label in index order, one per paragraph).

Each block is an `io.StringIO`: appending is as cheap as a list's, and the text is held as one
compact buffer instead of one string object per token.

Bounded: past `limit` characters (all blocks together) the piece that crosses it is cut and
every later piece is dropped; `truncated` says so. A bounded assembly never holds more than
`limit` characters, whatever the stream.
"""

from __future__ import annotations

import sys
from io import StringIO

from aibridge.providers.jsonfields import _join

# Characters of output text assembled per stream, for secret scanning of model output. Real
# answers stay far below it (128k output tokens are ~0.5 Mi characters).
MAX_OUTPUT_CHARS = 4 << 20

Block = tuple[str, int]  # (label, index)


class TextAssembly:
    __slots__ = ("_blocks", "_final", "_room", "truncated")

    def __init__(self, limit: int | None = MAX_OUTPUT_CHARS) -> None:
        self._blocks: dict[Block, StringIO] = {}
        # The answer's whole text as its last event restates it (OpenAI Responses): what the
        # client got when no text pieces streamed, so it stands in for them only then.
        self._final: dict[Block, StringIO] = {}
        self._room = sys.maxsize if limit is None else limit
        self.truncated = False  # the limit was reached: later output was dropped

    def add(self, block: Block, piece: str) -> None:
        """Append `piece` to `block`; an empty piece still opens the block."""
        self._append(self._blocks, block, piece)

    def add_final(self, block: Block, piece: str) -> None:
        """A piece of the final restatement; kept only while no text piece has streamed."""
        if not self.has_text():
            self._append(self._final, block, piece)

    def _append(self, blocks: dict[Block, StringIO], block: Block, piece: str) -> None:
        room = self._room - len(piece)
        if room >= 0:
            self._room = room
        elif (piece := self._cut(piece)) is None:
            return
        buffer = blocks.get(block)
        if buffer is None:
            buffer = blocks[block] = StringIO()
        buffer.write(piece)

    def _cut(self, piece: str) -> str | None:
        """The part of an over-long piece that still fits (once), else None."""
        if self.truncated:
            return None
        self.truncated = True
        room, self._room = self._room, -1  # from now on every piece, even empty, is refused
        return piece[:room] or None

    def has_text(self) -> bool:
        return any(label == "text" for label, _ in self._blocks)

    def assembled(self) -> dict[str, str]:
        """{"text": ..., "thinking": ..., "refusal": ...}, each label present only if it
        streamed (an empty piece counts)."""
        blocks = {block: [buffer.getvalue()] for block, buffer in self._blocks.items()}
        if not self.has_text():
            blocks.update((block, [buffer.getvalue()]) for block, buffer in self._final.items())
        return _join(blocks)
