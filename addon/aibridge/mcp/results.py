"""A tool's result as the text the model reads, within the server's size limit.

Text content is passed on as it is; an embedded text resource as its text; images, audio and
binary resources are named, not inlined (their bytes would only cost tokens); a result with
structured content only is that content as JSON. A result longer than the limit is cut on a
character boundary and says so, with its full size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from mcp_types import (
    AudioContent,
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    ResourceLink,
    TextContent,
    TextResourceContents,
)


@dataclass(frozen=True)
class Rendered:
    text: str  # what the model reads
    is_error: bool  # the tool said it failed
    size: int  # bytes of the whole result text, before the limit


def render(result: CallToolResult, limit: int) -> Rendered:
    parts = [_part(block) for block in result.content]
    if not parts and result.structured_content is not None:
        parts = [json.dumps(result.structured_content, ensure_ascii=False)]
    text = "\n".join(parts)
    return Rendered(cut(text, limit), bool(result.is_error), len(text.encode()))


def _part(block: object) -> str:
    if isinstance(block, TextContent):
        return block.text
    if isinstance(block, EmbeddedResource):
        resource = block.resource
        if isinstance(resource, TextResourceContents):
            return resource.text
        return f"[binary resource {resource.uri} ({resource.mime_type or 'unknown type'})]"
    if isinstance(block, ResourceLink):
        return f"[resource {block.name}: {block.uri}]"
    if isinstance(block, ImageContent | AudioContent):
        kind = "image" if isinstance(block, ImageContent) else "audio"
        return f"[{kind} ({block.mime_type}) not shown]"
    return f"[{getattr(block, 'type', 'unknown')} content not shown]"


def cut(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    note = f"\n[cut by AI Bridge: {limit} of {len(data)} bytes]"
    return data[:max(0, limit - len(note.encode()))].decode("utf-8", "ignore") + note
