"""GitHub Copilot's model API (`api.githubcopilot.com` and the plan hosts
`api.individual|business|enterprise.githubcopilot.com`): OpenAI's Chat Completions and Responses
at the root (`/chat/completions`, `/responses`), bridged; everything else (`/models`,
`/agents`, `/mcp`, telemetry) passes through.

There are no central keys: every request carries its user's own Copilot token
(`Authorization: Bearer`, minted by GitHub for the signed-in user), which goes on as BYOK. The
bridge records who called (the proxy's actor), the model and the usage Copilot reports.
Errors are OpenAI's envelope.
"""

from __future__ import annotations

from mitmproxy.http import Headers

from aibridge.errors.envelope import OPENAI_ERRORS
from aibridge.intercept import parse_bearer
from aibridge.providers.base import CredentialSlot, ProviderApi
from aibridge.providers.openai_chat import CHAT_COMPLETIONS
from aibridge.providers.openai_responses import Responses


class CopilotResponses(Responses):
    websocket = False


_BEARER = CredentialSlot("Authorization", bearer=True)


class CopilotApi(ProviderApi):
    type = "copilot"
    apis = (CHAT_COMPLETIONS, CopilotResponses())
    credential = _BEARER
    errors = OPENAI_ERRORS
    base_path = ""
    byok_only = True
    prices_id = "github-copilot"

    def client_credential(self, headers: Headers) -> tuple[CredentialSlot, str] | None:
        token = parse_bearer(headers.get("authorization"))
        return (_BEARER, token) if token else None


COPILOT = CopilotApi()
