"""Azure OpenAI (`<resource>.openai.azure.com`, `<resource>.cognitiveservices.azure.com`): the
OpenAI wire formats under `/openai`, with Azure's addressing and credentials.

Bridged routes, below `/openai` (the `api-version` query parameter goes on as sent):

- `/deployments/{deployment}/chat/completions`, `/deployments/{deployment}/responses`,
  `/deployments/{deployment}/embeddings`: the deployment names the model (what the `AzureOpenAI`
  SDK client calls for chat and embeddings);
- `/responses` (Azure's Responses API, the model — a deployment name — in the body);
- the v1 API, `/v1/chat/completions`, `/v1/responses`, `/v1/embeddings` (model in the body).

Everything else under `/openai` (models, files, batches, ...) passes through with the key swap.
A deployment name is read as the model the provider's `deployments` map says it serves
(`Provider.request_info`), so records, prices, budgets and limits see the model.

The credential is the `api-key` header; central keys go there. A client's Entra ID token
(`Authorization: Bearer`) is the caller's own and passes as BYOK. Errors are OpenAI's envelope.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from types import MappingProxyType

from mitmproxy.http import Headers

from aibridge.errors.envelope import OPENAI_ERRORS
from aibridge.intercept import parse_bearer
from aibridge.providers.base import NO_PARAMS, CredentialSlot, ProviderApi, RequestInfo, WireApi
from aibridge.providers.openai_chat import ChatCompletions
from aibridge.providers.openai_embeddings import Embeddings
from aibridge.providers.openai_responses import Responses

_DEPLOYMENT = re.compile(r"/deployments/([^/]+)(/.+)")


class _Deployment(WireApi):
    """A wire format addressed as `/deployments/{deployment}<path>`: the deployment is the
    model, whatever the body says (Azure ignores a `model` in the body there)."""

    def match(self, method: str, path: str) -> Mapping[str, str] | None:
        found = _DEPLOYMENT.fullmatch(path) if method == "POST" else None
        if found is None or found[2] != self.path:
            return None
        return MappingProxyType({"deployment": found[1]})

    def request_info(self, body: object, params: Mapping[str, str] = NO_PARAMS) -> RequestInfo:
        info = super().request_info(body, params)
        deployment = params.get("deployment")
        return dataclasses.replace(info, model=deployment) if deployment else info


class DeploymentChat(_Deployment, ChatCompletions):
    pass


class DeploymentResponses(_Deployment, Responses):
    websocket = False  # Azure's Realtime API is another protocol


class DeploymentEmbeddings(_Deployment, Embeddings):
    pass


class V1Chat(ChatCompletions):
    path = "/v1/chat/completions"


class V1Responses(Responses):
    path = "/v1/responses"
    websocket = False


class V1Embeddings(Embeddings):
    path = "/v1/embeddings"


class AzureResponses(Responses):
    websocket = False


_API_KEY = CredentialSlot("api-key")
_BEARER = CredentialSlot("Authorization", bearer=True)


class AzureApi(ProviderApi):
    type = "azure"
    apis = (DeploymentChat(), DeploymentResponses(), DeploymentEmbeddings(), AzureResponses(),
            V1Chat(), V1Responses(), V1Embeddings())
    credential = _API_KEY
    errors = OPENAI_ERRORS
    base_path = "/openai"
    prices_id = "azure"

    def client_credential(self, headers: Headers) -> tuple[CredentialSlot, str] | None:
        api_key = headers.get("api-key", "").strip()
        if api_key:
            return _API_KEY, api_key
        token = parse_bearer(headers.get("authorization"))  # Entra ID, or a key on /v1
        return (_BEARER, token) if token else None


AZURE = AzureApi()
