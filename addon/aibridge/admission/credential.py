"""Which credential a provider request carries upstream: a central key or the caller's own.

Modes per provider:
- `centralized`: always a key from the provider's pool; the caller's auth headers are dropped.
- `byok`: always the caller's own key; a request without one is refused (401).
- `auto`: the caller's own key when it sent one that is not its proxy token, else a central key.
  People who use the central keys set their SDK's API key to their proxy token (or leave it
  empty); anyone with a personal key or a subscription sign-in keeps using it.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from mitmproxy.http import Headers

from aibridge.access.actors import token_digest
from aibridge.intercept import (
    OPENAI_ERR_TYPE_API,
    OPENAI_ERR_TYPE_AUTHENTICATION,
    CredentialInfo,
    CredentialKind,
    ResponseError,
    new_credential_info,
    new_response_error,
    response_error_from_key_pool,
)
from aibridge.keys.aws import AwsCredentials, AwsCredentialsError
from aibridge.keys.pool import Attempt, Key, KeyPoolError
from aibridge.providers import Provider


@dataclass(frozen=True)
class UpstreamCredential:
    info: CredentialInfo
    header: str  # upstream auth header name
    value: str  # the header's full value; lives only until the request is on the wire
    key: Key | None = None  # the pool key, for centralized credentials
    attempt: Attempt | None = None  # the pool walk `key` came from, when the caller gave one
    # Central AWS credentials that sign the request instead of a key in `header` (Bedrock);
    # `value` is then empty and the rewrite signs (upstream.sigv4).
    signer: AwsCredentials | None = None

    def __repr__(self) -> str:
        return f"UpstreamCredential({self.info!r}, header={self.header!r})"


def resolve_credential(provider: Provider, client_headers: Headers,
                       proxy_token: bytes | None, *,
                       attempt: Attempt | None = None, query: str = "") -> UpstreamCredential:
    """Pick the credential; raises `ResponseError` when the request cannot be authorised.

    `proxy_token` is the SHA-256 digest of the token the caller authenticated to the proxy with.
    A centralized credential takes the next key of `attempt` (a walk of `provider.pool`, so a
    failover loop calls this again per key), else the pool's first usable key.
    """
    mode = provider.credentials
    own = None  # a centralized provider never looks at the caller's own credential
    if mode != "centralized":
        # A credential in the headers wins over one in the URL query (`query`, the raw query
        # string: Gemini's `?key=`), which the rewrite removes in any case.
        own = (provider.api.client_credential(client_headers)
               or provider.api.query_credential(query))
        if own is not None and _is_proxy_token(own[1], proxy_token):
            own = None  # the caller's proxy token is ours, never a provider credential to forward
    if mode == "auto" and own is not None:
        mode = "byok"
    if mode == "byok":
        if own is None:
            raise new_response_error(
                f"no credential: provider {provider.name!r} needs your own API key "
                f"(send it in the {provider.api.credential.name} header)",
                OPENAI_ERR_TYPE_AUTHENTICATION, "missing_api_key", 401, should_retry=False)
        slot, secret = own
        return UpstreamCredential(new_credential_info(CredentialKind.BYOK, secret, slot.name),
                                  slot.name, slot.value(secret))
    if provider.pool is None and provider.signer is not None:
        return _signed(provider, provider.signer)
    if provider.pool is None:
        raise new_response_error(
            f"no credential: provider {provider.name!r} has no central keys and the request "
            "carries no API key of its own; set your own provider API key, or ask the bridge's "
            "operator to configure central keys", OPENAI_ERR_TYPE_AUTHENTICATION,
            "missing_api_key", 401, should_retry=False)
    try:
        key = attempt.next() if attempt is not None else provider.pool.select()
    except KeyPoolError as e:
        error = response_error_from_key_pool(e)
        assert isinstance(error, ResponseError)
        raise error from e  # the cause tells callers how the pool was exhausted
    slot = provider.api.credential
    # A pool key's masked info is made once, with the key: no secret-keyed cache outlives it.
    return UpstreamCredential(key.info(slot.name), slot.name, slot.value(key.secret), key,
                              attempt)


def _signed(provider: Provider, signer: AwsCredentials) -> UpstreamCredential:
    """The bridge signs with its AWS credentials; the hint is the access key id, masked."""
    try:
        access_key = signer.frozen().access_key  # renewed if it ran out, or refused here
    except AwsCredentialsError as e:
        raise new_response_error(f"{provider.name}: {e}", OPENAI_ERR_TYPE_API,
                                 "upstream_credentials", 502) from None
    slot = provider.api.credential.name
    return UpstreamCredential(new_credential_info(CredentialKind.CENTRALIZED, access_key, slot),
                              slot, "", signer=signer)


def _is_proxy_token(secret: str, proxy_token: bytes | None) -> bool:
    return proxy_token is not None and hmac.compare_digest(token_digest(secret), proxy_token)
