"""The OpenAI API (and OpenAI-compatible providers: Groq, DeepSeek, vLLM, ... with their own hosts
and `base_path`): Chat Completions, Responses and Embeddings, Bearer keys, OpenAI's error
envelope."""

from __future__ import annotations

from mitmproxy.http import Headers

from aibridge.errors.envelope import OPENAI_ERRORS
from aibridge.intercept import parse_bearer
from aibridge.providers.base import CredentialSlot, ProviderApi
from aibridge.providers.openai_chat import CHAT_COMPLETIONS
from aibridge.providers.openai_embeddings import EMBEDDINGS
from aibridge.providers.openai_responses import RESPONSES

_BEARER = CredentialSlot("Authorization", bearer=True)


class OpenAIApi(ProviderApi):
    type = "openai"
    apis = (CHAT_COMPLETIONS, RESPONSES, EMBEDDINGS)
    credential = _BEARER
    errors = OPENAI_ERRORS

    def client_credential(self, headers: Headers) -> tuple[CredentialSlot, str] | None:
        token = parse_bearer(headers.get("authorization"))
        return (_BEARER, token) if token else None


OPENAI = OpenAIApi()
