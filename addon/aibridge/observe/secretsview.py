"""The "Secrets" contentview for mitmweb/mitmproxy: a request body in which secret scanning
replaced secrets (redacted before it went upstream, or masked in the kept copy once sent in
`log` mode, or refused with `block`), as indented JSON with every placeholder's line marked
and a list of the findings on top.

Chosen by default only for the request (or client WebSocket message) of a flow whose metadata
lists findings; any other body keeps mitmproxy's own views. Like the SSE view it never raises:
a body it cannot read is shown as it is.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Mapping, Sequence

from mitmproxy import contentviews

from aibridge.observe.flowview import KEY
from aibridge.secrets.findings import REQUEST, summary
from aibridge.textsafe import printable

log = logging.getLogger(__name__)

PLACEHOLDER = re.compile(r"\[REDACTED [a-z0-9-]+ #[0-9a-f]{6}\]")
ACTION_WORDS = {"redact": "redacted before it was sent",
                "log": "sent as it was; masked in this copy",
                "block": "refused: not sent"}


class SecretsContentview(contentviews.Contentview):
    syntax_highlight = "yaml"  # JSON is YAML: strings and the `#` marks are highlighted

    @property
    def name(self) -> str:
        return "Secrets"

    def prettify(self, data: bytes, metadata: contentviews.Metadata) -> str:
        try:
            return render(data, _findings(metadata))
        except Exception:  # never fail a view on a hostile body: show it as it is
            log.debug("Secrets contentview failed; showing raw text", exc_info=True)
            return data.decode("utf-8", "replace")

    def render_priority(self, data: bytes, metadata: contentviews.Metadata) -> float:
        return 3 if _findings(metadata) and PLACEHOLDER.search(
            data.decode("utf-8", "replace")) else -1


def _findings(metadata: contentviews.Metadata) -> list[Mapping[str, str]]:
    """The request findings of the flow, if the data is its request or a client message."""
    flow = metadata.flow
    if flow is None:
        return []
    request = getattr(flow, "request", None)
    ws = metadata.websocket_message
    if not ((metadata.http_message is not None and metadata.http_message is request)
            or (ws is not None and ws.from_client)):
        return []
    meta = flow.metadata.get(KEY)
    found = meta.get("secrets") if isinstance(meta, dict) else None
    return [f for f in found or () if isinstance(f, dict) and f.get("source") == REQUEST]


def render(data: bytes, findings: Sequence[Mapping[str, str]]) -> str:
    by_placeholder = {f.get("placeholder"): f for f in findings}
    lines = [f"# {summary(findings) or 'no secrets'}; each marked ◀ below"]
    for f in findings:
        action = ACTION_WORDS.get(f.get("action", ""), "")
        lines.append(printable(f"#   {f.get('placeholder')} {action} · {f.get('where')}",
                               limit=300))
    text = data.decode("utf-8", "replace")
    with contextlib.suppress(ValueError):
        text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    for line in text.splitlines():
        marks = [m.group(0) for m in PLACEHOLDER.finditer(line)]
        if marks:
            kinds = ", ".join(dict.fromkeys(
                f"{by_placeholder[m]['rule']} {by_placeholder[m]['action']}"
                if m in by_placeholder else m for m in marks))
            line = f"{line}  # ◀ {kinds}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def register() -> None:
    """Add the view to mitmproxy's registry, once per process (see contentview.register)."""
    existing = contentviews.registry.get("secrets")
    if isinstance(existing, SecretsContentview):
        return
    contentviews.add(SecretsContentview)
