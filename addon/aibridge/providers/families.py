"""What differs between provider families: auth header, bridged routes, default paths.

OpenAI-compatible providers (Groq, DeepSeek, vLLM, ...) reuse the `openai` family with their own
hosts and `base_path`; Anthropic-compatible ones reuse `anthropic`.
"""

from __future__ import annotations

from dataclasses import dataclass

from mitmproxy.http import Headers

from aibridge.intercept import parse_bearer


@dataclass(frozen=True)
class Family:
    type: str
    auth_header: str
    base_path: str
    bridged: dict[str, str]  # path under base_path -> route kind
    passthrough: tuple[str, ...]  # path prefixes under base_path that pass with the key swap
    extra_passthrough: tuple[str, ...] = ()  # absolute prefixes (side endpoints of the clients)

    def auth_value(self, key: str) -> str:
        return f"Bearer {key}" if self.auth_header == "Authorization" else key

    def client_credential(self, headers: Headers) -> tuple[str, str] | None:
        """The caller's own credential as (header name, secret), if it sent one."""
        if self.type == "anthropic":
            # A personal API key wins over a bearer token, as Claude Code does.
            api_key = headers.get("x-api-key", "").strip()
            if api_key:
                return "X-Api-Key", api_key
        token = parse_bearer(headers.get("authorization"))
        return ("Authorization", token) if token else None


OPENAI = Family(
    type="openai",
    auth_header="Authorization",
    base_path="/v1",
    bridged={"/chat/completions": "chat", "/responses": "responses"},
    passthrough=("/",),
)

ANTHROPIC = Family(
    type="anthropic",
    auth_header="X-Api-Key",
    base_path="/v1",
    bridged={"/messages": "messages"},
    passthrough=("/",),
    # Claude Code calls these on api.anthropic.com besides the API proper.
    extra_passthrough=("/api/",),
)

FAMILIES = {f.type: f for f in (OPENAI, ANTHROPIC)}
